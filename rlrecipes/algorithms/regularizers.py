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


def a2pr_targets(adv_N: torch.Tensor, injected_N: torch.Tensor, group_size: int,
                 gate: str = "advantage") -> torch.Tensor:
    """Per-row weight of A2PR's behaviour-cloning term (see `a2pr`): in each group, the target is
    the best on-policy row if its advantage >= the dataset row's, else the dataset (injected)
    row; its weight is 1[A_best >= 0] + 1[A_data > 0]. Rows that are not a target weigh 0.
    `gate: none` is TD3+BC's plain behaviour cloning: the dataset row, weight 1."""
    G = group_size
    if gate == "none":
        return injected_N.float().view(-1)
    adv_BG, inj_BG = adv_N.detach().float().view(-1, G), injected_N.bool().view(-1, G)
    w_BG = torch.zeros_like(adv_BG)
    for b in range(adv_BG.shape[0]):
        own = (~inj_BG[b]).nonzero().flatten()
        data = inj_BG[b].nonzero().flatten()
        best = own[adv_BG[b, own].argmax()] if len(own) else None
        a_best = adv_BG[b, best] if best is not None else None
        a_data = adv_BG[b, data[0]] if len(data) else None
        weight = float(a_best is not None and a_best >= 0) + float(a_data is not None and a_data > 0)
        if a_data is None or (a_best is not None and a_best >= a_data):
            target = best
        else:
            target = data[0]
        if target is not None:
            w_BG[b, target] = weight
    return w_BG.view(-1)


@register("regularizer", "a2pr")
def a2pr(logp_NT, adv_N, mask_NT, injected_N, group_size, coef: float = 0.4,
         gate: Literal["advantage", "none"] = "advantage"):
    """A2PR, advantage-guided policy regularization (Liu et al., ICML 2024, arXiv 2405.19909;
    the actor update of the official A2PR.py) as a text analogue [recon]. The actor loss there is
    -lambda Q(s, pi(s)) + mean(adv * ||pi(s) - target||^2) with two candidate actions, the
    dataset's a and the VAE's reconstruction of the policy's own action (a high-advantage action
    near pi): target = recon_pi if A(recon_pi) >= A(a) else a, and adv = 1[A(recon_pi) >= 0] +
    1[A(a) > 0] (both gates count). Here the dataset response is the group's injected gold row
    (a sampler such as `gt_injection` puts it in), the VAE candidate is the group's best on-policy
    sample (in the policy's support, as the VAE keeps it), A is the loop's advantage, and the
    squared error becomes the target's negative log-likelihood:

        term_t = coef * w * (-logp_t)   on the target row's tokens, w in {0, 1, 2}.

    `coef` 0.4 = 1 / 2.5: A2PR scales the RL term by alpha / mean|Q| (alpha 2.5, TD3+BC's),
    which for unit-scale advantages is the BC term at 1 / 2.5 of the policy-gradient term.
    Groups without an injected row use only the best sample. `gate: none` is the TD3+BC
    control A2PR is compared with: always clone the dataset row (weight 1). Needs whole groups
    in every micro-batch (validate checks it). Metrics: `a2pr/weight` (mean w per group),
    `a2pr/gold_target` (share of groups whose target is the gold)."""
    if gate not in ("advantage", "none"):
        raise ValueError(f"gate must be advantage or none, got {gate!r}")
    w_N = a2pr_targets(adv_N, injected_N, group_size, gate).to(logp_NT.device)
    term_NT = coef * w_N.unsqueeze(-1) * (-logp_NT) * mask_NT
    groups = w_N.view(-1, group_size)
    inj = injected_N.bool().view(-1, group_size).to(w_N.device)
    metrics = {"a2pr/weight": groups.sum(1).mean().item(),
               "a2pr/gold_target": ((groups > 0) & inj).any(1).float().mean().item()}
    return term_NT, metrics
