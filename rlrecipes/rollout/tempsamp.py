"""TempSamp-R1 ground-truth injection (Li et al., arXiv 2509.18056, method: mixed-policy sampling;
papers/next/tempsamp_r1.md §§1-2; the EasyR1 re-implementation's `_inject_gt_rollout_in_gen_output`).

Every group of G rollouts keeps G - 1 on-policy samples and gets the task's gold answer
(`task.gold(row)`) in slot `slot` (the fork's slot -1; the paper's G = 4 is 3 + 1), injected
through `Batch.inject`: kept prompt, tokenised as if sampled, re-scored with the recipe's
rewards. Behaviour log-probs follow rollout/inject.py: pi_old := pi_theta.detach(), so with one
update per batch (the paper's pi_old = pi_theta) the GT row's ratio is 1 and its gradient is an
advantage-weighted likelihood term on the gold. Advantages are then computed over the whole
group, GT included (joint normalisation); the paper's soft shaping is a reward option
(`interval_iou` with `shape: true`, rewards/interval.py) and the anchoring ablation an
advantage (`tempsamp_anchor`, algorithms/tempsamp.py).

Diagnostics (after injection, weighted total reward, GRPO advantage with eps 1e-6 whatever the
recipe's estimator): `gt/onpolicy_reward_mean`, `gt/reward` (the GT rows' mean),
`gt/onpolicy_neg_adv_frac` (share of on-policy rows whose advantage is negative: the paper's
argument is that raw GT injection pushes nearly all of them below zero) and `gt/adv_skew`
(sample skewness of all rows' advantages).
"""
from __future__ import annotations

import torch

from ..registry import register
from .samplers import Batch, Uniform


def skewness(x: torch.Tensor) -> float:
    """Population sample skewness E[(x - mean)^3] / std^3 (NaN for constant x)."""
    x = x.double().flatten()
    d = x - x.mean()
    m2 = d.pow(2).mean()
    return (d.pow(3).mean() / m2.pow(1.5)).item() if m2 > 0 else float("nan")


@register("sampler", "gt_injection")
class GTInjection(Uniform):
    """TempSamp-R1's mixed-policy groups (arXiv 2509.18056, method section): uniform prompt order, and from
    step `start_step` on every group's slot `slot` holds the gold answer (module docstring)."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, slot: int = -1, start_step: int = 1):
        super().__init__(num_rows, seed, shuffle)
        if start_step < 1:
            raise ValueError("start_step must be >= 1 (RL steps count from 1)")
        self.slot, self.start_step = slot, start_step

    def refine(self, batch: Batch) -> None:
        from ..algorithms.advantages import grpo
        from ..rewards.combine import combine
        G = batch.group_size
        if not -G <= self.slot < G:
            raise ValueError(f"gt_injection slot {self.slot} is outside a group of {G}")
        if batch.step < self.start_step:
            return
        if batch.gold_of is None:
            raise RuntimeError("gt_injection needs the task's gold completions (batch.gold_of)")
        slot = self.slot % G
        dest = list(range(slot, len(batch.rows), G))
        batch.inject(dest, [batch.gold_of(batch.rows[d]) for d in dest])
        total_BG = combine(batch.rewards_NK, batch.weights).view(-1, G)
        total_BG = torch.where(torch.isnan(total_BG), total_BG.nanmean(1, keepdim=True), total_BG)
        adv_BG = grpo(total_BG, eps=1e-6)
        onpolicy = torch.ones(G, dtype=torch.bool)
        onpolicy[slot] = False
        m = batch.metrics
        m["gt/reward"] = total_BG[:, slot].mean().item()
        m["gt/onpolicy_reward_mean"] = total_BG[:, onpolicy].mean().item()
        m["gt/onpolicy_neg_adv_frac"] = (adv_BG[:, onpolicy] < 0).float().mean().item()
        m["gt/adv_skew"] = skewness(adv_BG)
