"""Advantage estimators that give one advantage per token (issue 19, mechanism 1; the inputs
they name are described in rewards/dense.py and built by credit.py)."""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register
from .advantages import grpo


@register("advantage", "returns_to_go")
def returns_to_go(rewards_BG: torch.Tensor, token_rewards_BGT: torch.Tensor, mask_BGT: torch.Tensor,
                  gamma: float = 1.0, baseline: Literal["group", "position", "none"] = "group") -> torch.Tensor:
    """SubPO (Prajapat et al., "Submodular Reinforcement Learning", arXiv 2307.13372, §4,
    Alg. 1): the policy gradient with the marginal gains r_j = F(s_{j+1} | tau_{0:j}) as
    per-step rewards, each action weighted by its return-to-go

        R_t = sum_{j >= t} gamma^(j - t) r_j,      A_t = R_t - b

    over the tokens of one completion (j runs over positions; gamma 1 as the paper's finite
    horizon). A plain reward earns on the last policy token, so with no segment credit R_t is
    the sequence reward everywhere. Baselines (the paper uses none or a learned one [unverified]):
    `group` b = the mean total reward of the completion's group (GRPO's centring); `position`
    b_t = the mean of R_t over the group's completions that have a policy token at t; `none`.
    Tokens outside the policy's mask get 0."""
    if baseline not in ("group", "position", "none"):
        raise ValueError(f"baseline must be group, position or none, got {baseline!r}")
    r_BGT, m_BGT = token_rewards_BGT.float(), mask_BGT.float()
    T = r_BGT.shape[-1]
    if gamma == 1.0:
        R_BGT = r_BGT.flip(-1).cumsum(-1).flip(-1)
    else:
        R_BGT, running = torch.zeros_like(r_BGT), torch.zeros_like(r_BGT[..., 0])
        for t in reversed(range(T)):
            running = r_BGT[..., t] + gamma * running
            R_BGT[..., t] = running
    if baseline == "group":
        R_BGT = R_BGT - R_BGT[..., 0].mean(1, keepdim=True).unsqueeze(-1)
    elif baseline == "position":
        n_BT = m_BGT.sum(1, keepdim=True)
        R_BGT = R_BGT - (R_BGT * m_BGT).sum(1, keepdim=True) / n_BT.clamp(min=1)
    return R_BGT * m_BGT


@register("advantage", "hrpo")
def hrpo(rewards_BG: torch.Tensor, segments_BGK: list, mask_BGT: torch.Tensor, reward_names_K: list[str],
         action_reward: str, lam: float = 0.5, eps: float = 1e-4) -> torch.Tensor:
    """MasHost's Hierarchical Relative Policy Optimization (arXiv 2506.08507; algorithms_b.md §19)
    [recon: the formula is reconstructed from the abstract, lam 0.5 unverified]:

        A_{g,t} = (R_g - mean R) / (std R + eps) + lam * (a_{g,t} - mean_{g'} a_{g',t})

    R_g = the combined reward (the group-relative part, GRPO's); a_{g,t} = the score of
    decision t of completion g, the t-th segment of the reward named `action_reward` (give it
    weight 0 so it does not also enter R). The mean runs over the group's completions that
    have a decision t (a lone decision t gets no action term). Every token of decision t's
    segment gets its A_{g,t}; tokens outside any decision get the group part alone."""
    if action_reward not in reward_names_K:
        raise ValueError(f"action_reward {action_reward!r} is not one of the recipe's rewards "
                         f"{reward_names_K}")
    k = reward_names_K.index(action_reward)
    group_BG = grpo(rewards_BG, eps=eps)
    adv_BGT = group_BG.unsqueeze(-1).expand_as(mask_BGT).clone().float()
    B, G, T = mask_BGT.shape
    for b in range(B):
        spans = [segments_BGK[b][g][k] or [] for g in range(G)]
        for t in range(max(map(len, spans), default=0)):
            have = [g for g in range(G) if len(spans[g]) > t]
            if len(have) < 2:
                continue
            mean = sum(spans[g][t][2] for g in have) / len(have)
            for g in have:
                start, end, value = spans[g][t]
                adv_BGT[b, g, start:min(end, T)] += lam * (value - mean)
    return adv_BGT * mask_BGT.float()
