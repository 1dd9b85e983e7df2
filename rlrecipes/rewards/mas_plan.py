"""MasHost's two reward levels on the `mas_plan` task (arXiv 2506.08507; algorithms_b.md §19,
[recon]): the outcome of the whole team (accuracy and efficiency) as one number, and the
rationality of each construction decision as segment credit (rewards/dense.py) for HRPO's
action-wise term."""
from __future__ import annotations

from ..registry import register
from ..tasks.mas_plan import accuracy, decisions, rationality
from .dense import PerSegment


@register("reward", "mas_outcome")
def mas_outcome(prompts, completions, needed, cost: float = 0.1, **_) -> list[float]:
    """R = accuracy - cost x agents: the executor's verdict on the team in the last <answer>
    block (tasks/mas_plan.py) minus `cost` per decision written. No answer block: 0 (no team,
    nothing solved). Column `needed` comes from the task's rows."""
    if cost < 0:
        raise ValueError(f"cost must be >= 0, got {cost}")
    out = []
    for text, need in zip(completions, needed):
        found = decisions(text)
        roles = [r for r, _ in found or []]
        out.append(accuracy(roles, str(need).split(",")) - cost * len(roles) if roles else 0.0)
    return out


@register("reward", "mas_rationality")
def mas_rationality(prompts, completions, needed, **_) -> list[PerSegment]:
    """One segment per decision of the last <answer> block, ending at the role's last
    character, valued -1 when the decision is irrational (unknown, duplicate or unneeded role,
    or a verifier before any solver) and 0 otherwise; no segments without a block. Meant for
    weight 0 with `hrpo`'s `action_reward`, so it enters only the action-wise term."""
    out = []
    for text, need in zip(completions, needed):
        found = decisions(text) or []
        scores = rationality([r for r, _ in found], str(need).split(","))
        out.append(PerSegment([(end, s) for (_, end), s in zip(found, scores)]))
    return out
