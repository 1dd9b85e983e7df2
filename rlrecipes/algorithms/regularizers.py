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


def action_segments(mask_NT: torch.Tensor) -> torch.Tensor:
    """Ids 1, 2, ... of each run of consecutive sampled tokens (the actions between tool results
    of a multi-turn rollout); 0 where the mask is 0."""
    m = mask_NT > 0
    start = m & ~torch.nn.functional.pad(m[:, :-1], (1, 0), value=False)
    return torch.where(m, start.long().cumsum(-1), torch.zeros_like(mask_NT, dtype=torch.long))


@register("regularizer", "llds")
def llds(logp_NT, old_logp_NT, adv_N, mask_NT, coef: float = 0.1, gate: Literal["response", "action"] = "response"):
    """LLDS, likelihood-decline penalty (Deng et al., arXiv 2512.04220) [recon: the abstract and model
    card give the gates, the formula is ours]: on units of responses with A >= 0 whose total
    log-likelihood fell (sum_t logp - old_logp < 0), penalise each token whose log-prob fell:
    coef * max(0, old_logp - logp). The unit is the whole response (`gate: response`) or each
    action, a run of sampled tokens between tool results (`gate: action`, the paper's best; on
    single-turn rollouts the two agree). Needs >= 2 updates per rollout (train.ppo_epochs >= 2):
    on the first, logp == old_logp."""
    diff_NT = (logp_NT - old_logp_NT) * mask_NT
    keep_N = (adv_N >= 0).unsqueeze(-1)
    if gate == "response":
        fell_NT = ((diff_NT.sum(-1, keepdim=True) < 0) & keep_N).expand_as(diff_NT)
    else:
        seg_NT = action_segments(mask_NT)
        sums_NS = torch.zeros(diff_NT.shape[0], int(seg_NT.max()) + 1, dtype=diff_NT.dtype, device=diff_NT.device)
        sums_NS = sums_NS.scatter_add(1, seg_NT, diff_NT.detach())
        fell_NT = ((sums_NS < 0) & keep_N).gather(1, seg_NT) & (seg_NT > 0)
    term_NT = coef * torch.clamp(old_logp_NT - logp_NT, min=0) * fell_NT.detach()
    gated = (fell_NT & (mask_NT > 0)).any(-1).float().mean()
    return term_NT, {"llds_gated_frac": gated.detach()}
