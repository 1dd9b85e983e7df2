"""Advantage estimators: `fn(rewards_BG, **params) -> adv_BG` (float32)."""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register


@register("advantage", "grpo")
def grpo(rewards_BG: torch.Tensor, scale: Literal["group", "batch", "none"] = "group", eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantage, DeepSeekMath (arXiv 2402.03300) §4.1.2, outcome supervision:

        A_i = (r_i - mean(r_group)) / (std + eps)

    `scale`: "group" divides by each group's std, "batch" by the std of all B*G rewards
    (Dr.GRPO/TRL `scale_rewards="batch"`), "none" does not divide. std is unbiased (n-1)
    and eps = 1e-4, TRL's defaults; verl uses 1e-6 (set `eps`).
    """
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    rewards_BG = rewards_BG.float()
    centred_BG = rewards_BG - rewards_BG.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred_BG
    G = rewards_BG.shape[1]
    if scale == "group":
        std = rewards_BG.std(dim=1, keepdim=True) if G > 1 else torch.zeros_like(centred_BG[:, :1])
    else:
        std = rewards_BG.std() if rewards_BG.numel() > 1 else torch.zeros(())
    return centred_BG / (std + eps)


@register("advantage", "dr_grpo")
def dr_grpo(rewards_BG: torch.Tensor) -> torch.Tensor:
    """Dr.GRPO (arXiv 2503.20783) §3.2: A_i = r_i - mean(r_group), no std division, which removes
    the question-difficulty bias. Pair with the `constant` aggregation (their length-bias fix)."""
    rewards_BG = rewards_BG.float()
    return rewards_BG - rewards_BG.mean(dim=1, keepdim=True)
