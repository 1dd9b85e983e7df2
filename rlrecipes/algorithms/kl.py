"""KL estimators to the reference policy and the `kl` regularizer.

Schulman, "Approximating KL divergence" (2020, http://joschu.net/blog/kl-approx.html), with
log r = ref_logp - logp on tokens sampled from the current policy:
  k1 = -log r          (unbiased, high variance, can be negative)
  k2 = (log r)^2 / 2   (low variance, biased)
  k3 = (r - 1) - log r (unbiased, non-negative; GRPO, arXiv 2402.03300, eq. 4)
"""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register


def kl_estimate(logp_NT: torch.Tensor, ref_logp_NT: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    log_r = ref_logp_NT - logp_NT
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r ** 2
    if estimator == "k3":
        return torch.exp(log_r) - log_r - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; valid: k1, k2, k3")


@register("regularizer", "kl")
def kl(logp_NT, ref_logp_NT, mask_NT, beta: float = 0.04, estimator: Literal["k1", "k2", "k3"] = "k3"):
    """beta * KL(pi || pi_ref) per token, added to the policy loss before aggregation (GRPO,
    arXiv 2402.03300, eq. 3; TRL adds it the same way). beta = 0.04 is DeepSeekMath §4.2."""
    kl_NT = kl_estimate(logp_NT, ref_logp_NT, estimator)
    with torch.no_grad():
        value = (kl_NT * mask_NT).sum() / mask_NT.sum().clamp(min=1)
    return beta * kl_NT, {"kl": value}


def grpo_d_beta(step: int, total_steps: int, beta_min: float, beta_max: float, warm_frac: float = 0.3) -> float:
    """OThink-MR1's dynamic KL coefficient (GRPO-D, eq. 3): from beta_mid = (beta_min + beta_max)/2
    it falls linearly to beta_min over the first w = warm_frac * t steps, then rises linearly to
    beta_max at step t."""
    w = warm_frac * total_steps
    mid = (beta_min + beta_max) / 2
    if step <= w:
        return mid - (mid - beta_min) * step / w
    return beta_min + (beta_max - beta_min) * (step - w) / (total_steps - w)


@register("regularizer", "grpo_d")
def grpo_d(logp_NT, ref_logp_NT, mask_NT, step, total_steps, beta_min: float = 0.0, beta_max: float = 0.02,
           warm_frac: float = 0.3, estimator: Literal["k1", "k2", "k3"] = "k3"):
    """KL to the reference with OThink-MR1's GRPO-D schedule (explore early, exploit late); w/t = 0.3
    and the beta range per task are the paper's §4. Use it instead of algorithm.kl (beta 0)."""
    beta = grpo_d_beta(step, total_steps, beta_min, beta_max, warm_frac)
    kl_NT = kl_estimate(logp_NT, ref_logp_NT, estimator)
    with torch.no_grad():
        value = (kl_NT * mask_NT).sum() / mask_NT.sum().clamp(min=1)
    return beta * kl_NT, {"kl": value, "kl_beta": beta}
