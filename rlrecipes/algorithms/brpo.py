"""BRPO, Budget Relative Policy Optimization (AnytimeReasoner: Qi et al., "Optimizing Anytime
Reasoning via Budget Relative Policy Optimization", arXiv 2505.13438; official code
sail-sg/AnytimeReasoner `verl/verl/trainer/ppo/brpo.py`: `compute_cot_advantage`,
`compute_summary_advantage`; spec shared/papers/next/anytime_reasoner_brpo.md §2).

G thinking traces per question are cut at every budget b_0 < ... < b_{S-1} of a grid and
summarised A times from each cut (rollout/budget.py makes those summary rows, "branches").
With r̄_{g,j} the mean summary score of trace g at budget j and p the budget prior:

    R_{g,s}  = sum_{j >= s} p_j r̄_{g,j}                       return of segment s (b_{s-1}, b_s]
    V2_s     = mean_h R_{h,s}                                   group average return (GRPO-like)
    V1_{g,s} = [sum_{k<s} 2^k r̄_{g,k} / sum_{k<s} 2^k] sum_{j>=s} p_j,   V1_{g,0} = 0
    A_{g,s}  = R_{g,s} - (s V1_{g,s} + (S - s) V2_s) / S       (Fig. 1 right, code `brpo`)

No std normalisation, no KL. Every thinking token of segment s gets A_{g,s}. Summaries get their
own baseline: the mean score of the summaries that share their prompt (A > 1; a lone summary
gets baseline 0), or with A = 1 the mean over the group's G traces at that budget. The
discount factor 2 inside V1 is the code's; whether the paper's V1 is the same is [unverified].
Setting `prior: base`, one budget, A = 1 and `variance_reduction: v2only` gives the authors'
GRPO baseline, r - mean(r) (a test checks it).
"""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register

VARIANCE_REDUCTION = ("brpo", "v1only", "v2only", "none")


def budget_prior(prior, S: int) -> torch.Tensor:
    """p [S] (float64): `uniform` 1/S; `linear` p_j ∝ j + 1 (= b_j / sum b for the authors'
    equally spaced grid b_j = L_max (j + 1) / S, `set_training_split_plan`); `base` all mass on
    the last budget; or a list of S probabilities."""
    if prior == "uniform":
        p = torch.full((S,), 1.0 / S, dtype=torch.float64)
    elif prior == "linear":
        p = torch.arange(1, S + 1, dtype=torch.float64)
        p = p / p.sum()
    elif prior == "base":
        p = torch.zeros(S, dtype=torch.float64)
        p[-1] = 1.0
    elif isinstance(prior, (list, tuple)):
        if len(prior) != S or any(v < 0 for v in prior) or abs(sum(prior) - 1.0) > 1e-6:
            raise ValueError(f"prior must list {S} non-negative probabilities summing to 1, got {list(prior)}")
        p = torch.tensor(prior, dtype=torch.float64)
    else:
        raise ValueError(f"prior must be uniform, linear, base or a list of probabilities, got {prior!r}")
    return p


def think_advantages(rbar_BGS: torch.Tensor, probs_S: torch.Tensor, variance_reduction: str = "brpo",
                     discount: float = 2.0) -> torch.Tensor:
    """A [B, G, S] of every thinking segment (`compute_cot_advantage`), from the mean summary
    scores r̄ [B, G, S] and the prior p [S]; `variance_reduction` picks the baseline: brpo (the
    interpolation above), v1only (V1), v2only (V2: GRPO-style), none (0)."""
    if variance_reduction not in VARIANCE_REDUCTION:
        raise ValueError(f"variance_reduction must be one of {', '.join(VARIANCE_REDUCTION)}, got {variance_reduction!r}")
    r = rbar_BGS.double()
    S = r.shape[-1]
    p = probs_S.double().to(r.device)
    R = (r * p).flip(-1).cumsum(-1).flip(-1)                   # sum_{j >= s} p_j r_j
    V2 = R.mean(1, keepdim=True).expand_as(R)
    mass = p.flip(0).cumsum(0).flip(0)                         # sum_{j >= s} p_j
    w = discount ** torch.arange(S, dtype=torch.float64, device=r.device)
    num = torch.cat([torch.zeros_like(r[..., :1]), (r * w).cumsum(-1)[..., :-1]], -1)
    den = torch.cat([torch.ones(1, dtype=torch.float64, device=r.device), w.cumsum(0)[:-1]])
    V1 = num / den * mass
    s = torch.arange(S, dtype=torch.float64, device=r.device)
    baseline = {"brpo": (s * V1 + (S - s) * V2) / S, "v1only": V1, "v2only": V2, "none": torch.zeros_like(R)}
    return (R - baseline[variance_reduction]).float()


def summary_advantages(score_M: torch.Tensor, pool_M: torch.Tensor, slot_M: torch.Tensor, prompt_M: torch.Tensor,
                       n_summary: int, S: int, summary_method: str = "brpo") -> torch.Tensor:
    """A [M] of every summary (`compute_summary_advantage`): score minus the mean score of the
    summaries sharing its prompt (`pool`) when A = n_summary > 1 (a prompt with one summary gets
    baseline 0), or minus the mean over the question's traces at the same budget (`prompt`,
    `slot`) when A = 1. `summary_method: grpo` trains only the last budget's summaries."""
    if summary_method not in ("brpo", "grpo"):
        raise ValueError(f"summary_method must be brpo or grpo, got {summary_method!r}")
    score = score_M.double()
    key = pool_M if n_summary > 1 else prompt_M * S + slot_M
    _, inverse = torch.unique(key, return_inverse=True)
    total = torch.zeros(int(inverse.max()) + 1 if len(inverse) else 0, dtype=torch.float64).index_add(0, inverse, score)
    count = torch.zeros_like(total).index_add(0, inverse, torch.ones_like(score))
    base = torch.where(count[inverse] > 1, total[inverse] / count[inverse], torch.zeros_like(score))
    adv = score - base
    if summary_method == "grpo":
        adv = torch.where(slot_M == S - 1, adv, torch.zeros_like(adv))
    return adv.float()


@register("advantage", "brpo")
def brpo(rewards_BG: torch.Tensor, mask_BGT: torch.Tensor, branch_rewards_M: torch.Tensor,
         branch_parent_M: torch.Tensor, branch_slot_M: torch.Tensor, branch_pool_M: torch.Tensor,
         branch_cut_M: torch.Tensor, prior: Literal["uniform", "linear", "base"] | list[float] = "uniform",
         variance_reduction: Literal["brpo", "v1only", "v2only", "none"] = "brpo",
         summary_method: Literal["brpo", "grpo"] = "brpo", discount: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """AnytimeReasoner's advantages (module docstring): per-token advantages [B, G, T] of the
    thinking rows and one advantage per summary row [M] (the branches the `budget_summaries`
    sampler attached, in the loop's gathered order). A branch's reward is its summary's
    combined reward (NaN counts 0); r̄_{g,j} is the mean over trace g's branches at budget j.
    Thinking token t of trace g is in segment s when cut_{g,s-1} <= t < cut_{g,s} (cut = the
    branch's cut point, min(b_s, trace length)); a trace that ended before b_s has empty later
    segments, so their advantages reach no token (the code's `cot_mask`)."""
    B, G = rewards_BG.shape
    T = mask_BGT.shape[-1]
    S = int(branch_slot_M.max()) + 1
    score = torch.nan_to_num(branch_rewards_M.double(), nan=0.0)
    cell = branch_parent_M.long() * S + branch_slot_M.long()                 # (trace, budget)
    total = torch.zeros(B * G * S, dtype=torch.float64).index_add(0, cell, score)
    count = torch.zeros(B * G * S, dtype=torch.float64).index_add(0, cell, torch.ones_like(score))
    if bool((count == 0).any()):
        raise ValueError("brpo needs summaries of every trace at every budget")
    n_summary = int(count.min())
    adv_BGS = think_advantages((total / count).view(B, G, S), budget_prior(prior, S), variance_reduction, discount)
    cuts = torch.zeros(B * G * S, dtype=torch.long)
    cuts[cell] = branch_cut_M.long()          # the branches of one (trace, budget) share their cut
    cuts = cuts.view(B, G, S)
    seg_BGT = (torch.arange(T).view(1, 1, T, 1) >= cuts.unsqueeze(2)).sum(-1)   # segment of each token
    inside = seg_BGT < S
    adv_BGT = torch.gather(adv_BGS, 2, seg_BGT.clamp(max=S - 1)) * inside * mask_BGT.float()
    adv_M = summary_advantages(score, branch_pool_M, branch_slot_M, branch_parent_M // G, n_summary, S, summary_method)
    return adv_BGT, adv_M
