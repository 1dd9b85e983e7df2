"""CAPO, curvature-aware policy optimisation (Melo, Abate, Gal, arXiv 2510.00819) [recon].

From the abstract: a last-layer curvature model predicts which samples would make the update
unstable, and those are masked (under 8% of tokens). The mechanism below is our reconstruction
(../shared/papers/algorithms_b.md §5), restricted to the LM head W:

- the policy-gradient step on W is dW ∝ sum_t A_t (e_{y_t} - p_t) h_t^T (ascent direction);
- its logit change at token t is dz_t = dW h_t = sum_s A_s (e_{y_s} - p_s) (h_s . h_t), computed
  with the Gram matrix of the batch's hidden states, so dW (V x D) is never formed;
- the predicted KL shift is 1/2 dz^T (diag p - p p^T) dz (the Fisher of the softmax);
- a sequence is masked when its mean predicted KL is in the top `reject_frac` of the batch, or
  when its own objective is predicted to fall (mean A (dz[y] - p . dz) < 0).
The step size drops out: a quantile threshold is invariant to scaling dz. One pass, no greedy
re-computation. Memory is O(M^2 + M V) for M valid tokens of the micro-batch: fine for small
models and batches, not for a 150k vocabulary at long lengths.
"""
from __future__ import annotations

import torch

from ..registry import register
from .losses import ppo_clip


def fisher_quadratic(probs_MV: torch.Tensor, dz_MV: torch.Tensor) -> torch.Tensor:
    """dz^T (diag p - p p^T) dz per row = sum p dz^2 - (sum p dz)^2."""
    return (probs_MV * dz_MV ** 2).sum(-1) - (probs_MV * dz_MV).sum(-1) ** 2


def predicted_shift(hidden_NTD, probs_NTV, ids_NT, adv_N, mask_NT):
    """(predicted KL per sequence, predicted objective change per sequence) of a last-layer step."""
    valid = mask_NT.bool()
    rows = valid.nonzero(as_tuple=True)[0]
    h_MD, p_MV = hidden_NTD[valid].float(), probs_NTV[valid].float()
    onehot = torch.nn.functional.one_hot(ids_NT[valid], p_MV.shape[-1]).float()
    coef_MV = adv_N[rows].unsqueeze(-1).float() * (onehot - p_MV)
    dz_MV = (h_MD @ h_MD.T) @ coef_MV
    kl_M = 0.5 * fisher_quadratic(p_MV, dz_MV)
    dj_M = adv_N[rows].float() * ((dz_MV * onehot).sum(-1) - (p_MV * dz_MV).sum(-1))
    n = mask_NT.sum(-1).clamp(min=1)
    per_seq = lambda x_M: torch.zeros(len(adv_N), device=x_M.device).index_add_(0, rows, x_M) / n
    return per_seq(kl_M), per_seq(dj_M)


@register("loss", "capo")
def capo(logp_NT, old_logp_NT, adv_N, mask_NT, ids_NT, hidden_NTD, probs_NTV,
         reject_frac: float = 0.08, eps_low: float = 0.2, eps_high: float = 0.2):
    """PPO-clip (GRPO) on the sequences the last-layer curvature model keeps [recon; see module
    docstring]; reject_frac 0.08 is the abstract's "under 8% of tokens", applied to sequences."""
    with torch.no_grad():
        kl_N, dj_N = predicted_shift(hidden_NTD, probs_NTV, ids_NT, adv_N, mask_NT)
        active = adv_N != 0
        keep_N = torch.ones_like(adv_N, dtype=torch.bool)
        if active.sum() > 1 and reject_frac > 0:
            threshold = torch.quantile(kl_N[active], 1 - reject_frac)
            keep_N &= ~(active & (kl_N > threshold))
        keep_N &= ~(active & (dj_N < 0))
    loss_NT, metrics = ppo_clip(logp_NT, old_logp_NT, adv_N, mask_NT, eps_low=eps_low, eps_high=eps_high)
    metrics["capo_masked_frac"] = (~keep_N).float().mean()
    metrics["capo_pred_kl"] = kl_N.mean()
    return loss_NT * keep_N.unsqueeze(-1), metrics
