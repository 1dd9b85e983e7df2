"""Scaf-GRPO hint scaffolding (arXiv 2510.19807, §3 and Algorithm 1; control flow as in the
authors' verl trainer, `hint_mix_grpo/trainer/ray_trainer.py`, and `sh/hint_mix_grpo/bs256_6k_mix.sh`).

After `start_step` (code: 50), every group whose G rollouts all scored at most `threshold` (0)
is re-prompted with hints, one sample per hint level, all levels of all such groups in one
batched generation. Levels run tier by tier (Knowledge -> Planning -> Solution), k = 1..4
cumulative parts within a tier: `"Question: {q}\\n{Label}: {' '.join(parts[:k])}"`. The released
code comments the Planning tier out (8 levels), so `tiers` defaults to knowledge + solution.
The lowest level whose sample succeeds replaces the group's first failed rollout: its hinted
prompt and its response (so old, reference and new log-probs are conditioned on the hinted
prompt, and hint tokens, being prompt, never enter the loss). `replace_hint_prompt: true` keeps
the original prompt and swaps in only the response (off-policy); `replace_num: 2` does both, to
the first and second failed rollouts ("6+1+1"). Its rewards are re-scored and the group then
has a non-zero-variance reward, so the ordinary advantage gives it a gradient.

Hint parts come from the row fields `knowledge_components_parts`, `planning_skeleton_parts` and
`solution_breakdown_parts` (the authors' dataset layout). `template` and `joiner` (code: the
layout above and " ") set how a level is written into the prompt. Each rank scaffolds its own
share of the groups; the `scaf/*` metrics in metrics.jsonl are rank 0's share.
"""
from __future__ import annotations

from typing import Literal

from ..registry import register
from .samplers import Batch, Uniform

TIERS = {"knowledge": ("knowledge_components_parts", "Knowledge Hints"),
         "planning": ("planning_skeleton_parts", "Planning Hints"),
         "solution": ("solution_breakdown_parts", "Solution Hints")}
TEMPLATE = "Question: {question}\n{label}: {hints}"
Tier = Literal["knowledge", "planning", "solution"]


def hint_levels(row: dict, tiers=("knowledge", "solution"), levels_per_tier: int = 4,
                joiner: str = " ") -> list[tuple[str, int, str]]:
    """(tier, k, hint text) for every level of `row`, tier by tier, k = 1.. cumulative parts."""
    out = []
    for tier in tiers:
        parts = [str(p) for p in (row.get(TIERS[tier][0]) or [])]
        for k in range(1, min(levels_per_tier, len(parts)) + 1):
            out.append((tier, k, joiner.join(parts[:k])))
    return out


def hinted_question(question: str, tier: str, hints: str, template: str = TEMPLATE) -> str:
    return template.format(question=question, label=TIERS[tier][1], hints=hints)


def lowest_success(level_rewards, threshold: float = 0.0) -> int | None:
    """Index of the first level whose reward exceeds `threshold` (NaN counts as failure)."""
    for i, r in enumerate(level_rewards):
        if r == r and r > threshold:
            return i
    return None


@register("sampler", "scaffold_hints")
class ScaffoldHints(Uniform):
    """Scaf-GRPO (arXiv 2510.19807): uniform prompt sampling plus hint scaffolding of all-fail
    groups after each step's rewards (`refine`). See the module docstring for the control flow."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, start_step: int = 50,
                 tiers: list[Tier] = ("knowledge", "solution"), levels_per_tier: int = 4,
                 replace_hint_prompt: bool = False, replace_num: Literal[1, 2] = 1,
                 threshold: float = 0.0, template: str = TEMPLATE, joiner: str = " "):
        super().__init__(num_rows, seed, shuffle)
        if not tiers:
            raise ValueError("tiers must name at least one of knowledge, planning, solution")
        self.start_step, self.tiers, self.levels_per_tier = start_step, tuple(tiers), levels_per_tier
        self.replace_hint_prompt, self.replace_num = replace_hint_prompt, replace_num
        self.threshold, self.template, self.joiner = threshold, template, joiner

    def refine(self, batch: Batch) -> None:
        from ..rewards.combine import combine
        G, m = batch.group_size, batch.metrics
        reward_N = combine(batch.rewards_NK, batch.weights)
        failed_N = ~(reward_N > self.threshold)  # NaN fails too
        groups = failed_N.view(-1, G).all(1).nonzero().flatten().tolist()
        n_groups = len(batch.rows) // G
        m["scaf/all_fail_frac"] = len(groups) / n_groups  # before any hint: the unhinted policy
        m["scaf/all_fail_after"] = m["scaf/all_fail_frac"]
        if batch.step <= self.start_step or not groups:
            return
        asks, spans = [], {}  # (group, tier, k, hinted question); group -> its asks' indices
        for g in groups:
            row, start = batch.rows[g * G], len(asks)
            for tier, k, hints in hint_levels(row, self.tiers, self.levels_per_tier, self.joiner):
                asks.append((g, tier, k, hinted_question(batch.question_of(row), tier, hints, self.template)))
            spans[g] = range(start, len(asks))
        if not asks:
            return
        prompts = batch.format([q for *_, q in asks], [batch.rows[g * G] for g, *_ in asks])   # rows: their images
        hinted = batch.generate(prompts)
        hinted_NK = batch.score(prompts, hinted, [batch.rows[g * G] for g, *_ in asks])
        level_rewards = combine(hinted_NK, batch.weights)
        dest, src, keep, chosen = [], [], [], []
        plan = [self.replace_hint_prompt] if self.replace_num == 1 else [False, True]  # keep prompt?
        for g in groups:
            idx = spans[g]
            for i in idx:
                tier, k = asks[i][1], asks[i][2]
                key = f"scaf/hint_ok/{tier}{k}"
                m[key] = m.get(key, 0.0) + float(level_rewards[i] > self.threshold) / len(groups)
            best = lowest_success([level_rewards[i].item() for i in idx], self.threshold)
            if best is None:
                continue
            i = idx[best]
            chosen.append(asks[i])
            for j, keep_prompt in enumerate(plan):
                dest.append(g * G + j)
                src.append(i)
                keep.append(keep_prompt)
        batch.replace(dest, hinted, src, hinted_NK, keep)
        m["scaf/hinted_groups"] = float(len(groups))
        m["scaf/hint_success"] = len(chosen) / len(groups)
        m["scaf/all_fail_after"] = (len(groups) - len(chosen)) / n_groups
        order = [(t, k) for t in self.tiers for k in range(1, self.levels_per_tier + 1)]
        if chosen:
            m["scaf/level_mean"] = sum(order.index((t, k)) + 1 for _, t, k, _ in chosen) / len(chosen)
        for tier in self.tiers:
            m[f"scaf/rescued_by/{tier}"] = sum(t == tier for _, t, _, _ in chosen) / len(groups)

