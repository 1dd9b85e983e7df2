"""Regularizers: `fn(<inputs by name>, **params) -> (term_NT, metrics)`; the term is added to the
per-token policy loss before aggregation. Names of the inputs: see `algorithms/__init__.py`."""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register


@register("regularizer", "entropy")
def entropy_bonus(entropy_NT, mask_NT, coef: float = 0.001):
    """Entropy bonus -coef * H(pi(.|s_t)) per token (Mnih et al. 2016, arXiv 1602.01783, eq. 4;
    verl `entropy_coeff`). `entropy_NT` carries gradient here."""
    return -coef * entropy_NT, {}


@register("regularizer", "k2")
def k2(logp_NT, old_logp_NT, coef: float = 0.1):
    """OPMD's squared log-ratio to the rollout policy, coef * (logp - old_logp)^2 (Yao, Chen et al.,
    arXiv 2509.24203, §5; Trinity-RFT `k2` regularizer, Kimi's 1/2 absorbed into coef)."""
    return coef * (logp_NT - old_logp_NT) ** 2, {}


@register("regularizer", "forward_kl")
def forward_kl(logp_NT, coef: float = 0.1):
    """AsymRE's forward-KL term -coef * logp (Yao, Chen et al., arXiv 2509.24203, §5): raises the
    likelihood of every sample, the same as shifting the REINFORCE baseline down by coef."""
    return -coef * logp_NT, {}


@register("regularizer", "llds")
def llds(logp_NT, old_logp_NT, adv_N, mask_NT, coef: float = 0.1, gate: Literal["response"] = "response"):
    """LLDS, likelihood-decline penalty (Deng et al., arXiv 2512.04220) [recon: the abstract and model
    card give the gates, the formula is ours]: on responses with A >= 0 whose total log-likelihood
    fell (sum_t logp - old_logp < 0), penalise each token whose log-prob fell:
    coef * max(0, old_logp - logp). Needs >= 2 updates per rollout (train.ppo_epochs >= 2): on
    the first, logp == old_logp. Only the response-level gate exists yet; the action-level gate
    needs the multi-turn tool rollouts."""
    if gate != "response":
        raise ValueError("only gate: response is implemented (action-level needs multi-turn rollouts)")
    diff_NT = (logp_NT - old_logp_NT) * mask_NT
    fell_N = (diff_NT.sum(-1) < 0) & (adv_N >= 0)
    term_NT = coef * torch.clamp(old_logp_NT - logp_NT, min=0) * fell_N.unsqueeze(-1).detach()
    return term_NT, {"llds_gated_frac": fell_N.float().mean().detach()}
