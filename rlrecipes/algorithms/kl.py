"""KL estimators to the reference policy and the `kl` regularizer.

Schulman, "Approximating KL divergence" (2020, http://joschu.net/blog/kl-approx.html), with
log r = ref_logp - logp on tokens sampled from the current policy:
  k1 = -log r          (unbiased, high variance, can be negative)
  k2 = (log r)^2 / 2   (low variance, biased)
  k3 = (r - 1) - log r (unbiased, non-negative; GRPO, arXiv 2402.03300, eq. 4)
"""
from __future__ import annotations

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
def kl(logp_NT, ref_logp_NT, mask_NT, beta: float = 0.04, estimator: str = "k3"):
    """beta * KL(pi || pi_ref) per token, added to the policy loss before aggregation (GRPO,
    arXiv 2402.03300, eq. 3; TRL adds it the same way). beta = 0.04 is DeepSeekMath §4.2."""
    kl_NT = kl_estimate(logp_NT, ref_logp_NT, estimator)
    with torch.no_grad():
        value = (kl_NT * mask_NT).sum() / mask_NT.sum().clamp(min=1)
    return beta * kl_NT, {"kl": value}
