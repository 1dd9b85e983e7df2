"""DaGRPO off-policy anchors (Xie et al., arXiv 2512.06337, abstract: "Off-policy Data
Augmentation, which introduces high-quality anchors to recover training signals for challenging
tasks"; the rule below is the reconstruction of algorithms_b.md §11 [recon]).

After each step's rewards, a group whose G rollouts all fail (every value of `metric`, or of the
weighted total when unset, is at most `threshold`: 0 = "every reward in the group is 0") has no
positive sample and no gradient under a group-relative advantage. Its `replace_num` lowest-scoring
rollouts (weighted total; ties: the earliest) are replaced by the task's gold solution
(`task.gold(row)`, the completion the SFT stage imitates), injected through `Batch.inject`: kept
prompt, tokenised as if sampled, re-scored with the recipe's rewards. Behaviour log-probs follow
the injected-completion rule of rollout/inject.py: pi_old := pi_theta.detach(), so the anchor's
ratio is 1 at the first update. The group then has a positive sample and the advantage (DaGRPO's
`dagrpo`, or any other) pushes the policy toward the anchor and away from the failures.

The paper's anchors are external expert solutions ("dependence on external expert data for
anchors", its stated limitation); here they are the dataset's gold completions. Metrics:
`anchor/all_fail_frac` (groups with no success before injection) and `anchor/reward` (the
anchors' mean weighted reward after re-scoring; 1 + format weight when golds are right).
"""
from __future__ import annotations

import torch

from ..registry import register
from .samplers import Batch, Uniform


def lowest(total_G: torch.Tensor, k: int) -> list[int]:
    """Indices of the k lowest values (NaN counts as lowest; ties: the earliest first)."""
    vals = torch.nan_to_num(total_G.float(), nan=float("-inf"))
    order = sorted(range(len(vals)), key=lambda i: (vals[i].item(), i))
    return order[:k]


@register("sampler", "offpolicy_anchors")
class OffPolicyAnchors(Uniform):
    """DaGRPO's off-policy anchors (arXiv 2512.06337): uniform prompt order, and every all-fail
    group gets the gold solution in place of its lowest-scoring rollout (module docstring)."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, metric: str | None = None,
                 threshold: float = 0.0, replace_num: int = 1):
        super().__init__(num_rows, seed, shuffle)
        if replace_num < 1:
            raise ValueError("replace_num must be >= 1")
        self.metric, self.threshold, self.replace_num = metric, threshold, replace_num

    def refine(self, batch: Batch) -> None:
        from ..rewards.combine import combine
        G = batch.group_size
        if batch.gold_of is None:
            raise RuntimeError("offpolicy_anchors needs the task's gold completions (batch.gold_of)")
        total_BG = combine(batch.rewards_NK, batch.weights).view(-1, G)
        if self.metric is None:
            judged_BG = total_BG
        elif self.metric in batch.reward_names:
            judged_BG = batch.rewards_NK[:, batch.reward_names.index(self.metric)].view(-1, G)
        else:
            raise ValueError(f"offpolicy_anchors metric {self.metric!r} is not one of the recipe's "
                             f"rewards: {', '.join(batch.reward_names)}")
        failed_BG = ~(judged_BG > self.threshold)   # NaN fails too
        groups = failed_BG.all(1).nonzero().flatten().tolist()
        dest = [g * G + i for g in groups for i in lowest(total_BG[g], min(self.replace_num, G))]
        batch.inject(dest, [batch.gold_of(batch.rows[d]) for d in dest])
        batch.metrics["anchor/all_fail_frac"] = len(groups) / total_BG.shape[0]
        if dest:
            batch.metrics["anchor/reward"] = combine(batch.rewards_NK[dest], batch.weights).nanmean().item()
