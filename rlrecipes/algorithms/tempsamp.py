"""TempSamp-R1's advantage-anchoring ablation (Li et al., arXiv 2509.18056, ablation of the
mixed-policy advantage; papers/next/tempsamp_r1.md §2, constants from the paper notes).

With the ground truth injected in one slot of every group (sampler `gt_injection`), the paper
compares three ways to keep the GT row from dominating: reward scaling, advantage anchoring
(this estimator) and its non-linear soft shaping (reward `interval_iou` with `shape: true`,
then plain `grpo`, which is the method). Anchoring normalises the on-policy rows among
themselves and gives the GT row a fixed multiple of the best on-policy advantage:

    A_i = (r_i - mean_{j != gt} r_j) / (std_{j != gt} r_j + eps)    i != gt
    A_gt = lambda_off * max_{i != gt} A_i,   lambda_off = 1.2

std unbiased, as `grpo`. Where the on-policy rows tie (all fail or all succeed) they get 0 and
so does the GT row: the notes do not say what the paper does there [unverified].
"""
from __future__ import annotations

import torch

from ..registry import register


@register("advantage", "tempsamp_anchor")
def tempsamp_anchor(rewards_BG: torch.Tensor, slot: int = -1, lambda_off: float = 1.2, eps: float = 1e-6) -> torch.Tensor:
    """Advantage anchoring for a group with one injected GT row in `slot` (TempSamp-R1, arXiv
    2509.18056, ablation: A_gt = lambda_off * max on-policy A; module docstring)."""
    r = rewards_BG.float()
    G = r.shape[1]
    if G < 3 or not -G <= slot < G:
        raise ValueError(f"tempsamp_anchor needs G >= 3 and a slot inside the group (G={G}, slot={slot})")
    slot = slot % G
    keep = [i for i in range(G) if i != slot]
    on = r[:, keep]
    adv_on = (on - on.mean(1, keepdim=True)) / (on.std(1, keepdim=True) + eps)
    adv = torch.empty_like(r)
    adv[:, keep] = adv_on
    adv[:, slot] = lambda_off * adv_on.max(1).values
    return adv
