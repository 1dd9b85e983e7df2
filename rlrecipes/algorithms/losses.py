"""Policy losses (per token) and their aggregation to a scalar, side by side as in OpenRLHF.

A loss: `fn(logp_NT, old_logp_NT, adv_N, mask_NT, **params) -> (loss_NT, metrics)`.
An aggregation: `fn(loss_NT, mask_NT, max_len) -> (numerator, denominator)`; the scalar loss is
numerator / denominator. Splitting them lets the loop accumulate micro-batches exactly: the
denominator depends only on the mask, so it is summed over a mini-batch before any backward.
N = B*G sequences, T = completion tokens.
"""
from __future__ import annotations

import torch

from ..registry import register


@register("loss", "ppo_clip")
def ppo_clip(logp_NT, old_logp_NT, adv_N, mask_NT, eps_low: float = 0.2, eps_high: float = 0.2,
             dual_clip: float | None = None):
    """PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, eq. 7) as used by GRPO
    (DeepSeekMath, arXiv 2402.03300, eq. 3), with decoupled clip-higher (DAPO, arXiv 2503.14476,
    eq. 10: eps_low 0.2, eps_high 0.28) and optional dual clip (Ye et al. 2020, arXiv 1912.09729,
    eq. 5: for A < 0 the objective is bounded below by dual_clip * A, dual_clip > 1).

        rho_t = exp(logp - old_logp);  l_t = -min(rho_t A, clip(rho_t, 1-eps_low, 1+eps_high) A)
    """
    adv_NT = adv_N.unsqueeze(-1) if adv_N.dim() == 1 else adv_N
    ratio_NT = torch.exp(logp_NT - old_logp_NT)
    clipped_NT = torch.clamp(ratio_NT, 1 - eps_low, 1 + eps_high)
    objective_NT = torch.min(ratio_NT * adv_NT, clipped_NT * adv_NT)
    if dual_clip is not None:
        objective_NT = torch.where(adv_NT < 0, torch.max(objective_NT, dual_clip * adv_NT), objective_NT)
    with torch.no_grad():
        m = mask_NT.bool()
        low = (ratio_NT < 1 - eps_low) & (adv_NT < 0)
        high = (ratio_NT > 1 + eps_high) & (adv_NT > 0)
        n = m.sum().clamp(min=1)
        metrics = {"clip_frac": ((low | high) & m).sum() / n,
                   "ratio_mean": (ratio_NT * m).sum() / n}
    return -objective_NT, metrics


@register("aggregation", "token_mean")
def token_mean(loss_NT, mask_NT, max_len: int):
    """Mean over all unmasked tokens of the batch (DAPO, arXiv 2503.14476, eq. 12; TRL `dapo`/`bnpo`)."""
    return (loss_NT * mask_NT).sum(), mask_NT.sum().clamp(min=1)


@register("aggregation", "seq_mean_token_mean")
def seq_mean_token_mean(loss_NT, mask_NT, max_len: int):
    """Mean over sequences of each sequence's token mean (GRPO, arXiv 2402.03300, eq. 3; TRL `grpo`)."""
    per_seq_N = (loss_NT * mask_NT).sum(-1) / mask_NT.sum(-1).clamp(min=1)
    return per_seq_N.sum(), torch.tensor(float(loss_NT.shape[0]))


@register("aggregation", "seq_mean_token_sum")
def seq_mean_token_sum(loss_NT, mask_NT, max_len: int):
    """Mean over sequences of each sequence's token sum (verl `seq-mean-token-sum`)."""
    return (loss_NT * mask_NT).sum(), torch.tensor(float(loss_NT.shape[0]))


@register("aggregation", "constant")
def constant(loss_NT, mask_NT, max_len: int):
    """Token sum over N * max_len, a constant (Dr.GRPO, arXiv 2503.20783, §3.2; TRL `dr_grpo`).
    max_len is `generation.max_new_tokens`."""
    return (loss_NT * mask_NT).sum(), torch.tensor(float(loss_NT.shape[0] * max_len))


def aggregate(name: str, loss_NT, mask_NT, max_len: int):
    """Scalar loss of one batch under the named aggregation."""
    from ..registry import get
    num, den = get("aggregation", name)(loss_NT, mask_NT, max_len=max_len)
    return num / den
