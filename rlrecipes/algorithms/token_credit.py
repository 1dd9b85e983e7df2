"""Advantage estimators that give one advantage per token (issue 19, mechanism 1; the inputs
they name are described in rewards/dense.py and built by credit.py)."""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register
from .advantages import grpo


@register("advantage", "returns_to_go")
def returns_to_go(rewards_BG: torch.Tensor, token_rewards_BGT: torch.Tensor, mask_BGT: torch.Tensor,
                  segments_BGK: list, gamma: float = 1.0,
                  baseline: Literal["segment", "group", "position", "none"] = "segment",
                  scale: Literal["none", "group"] = "none", eps: float = 1e-4) -> torch.Tensor:
    """SubPO (Prajapat et al., "Submodular Reinforcement Learning", arXiv 2307.13372, §4,
    Alg. 1): the policy gradient with the marginal gains r_j = F(s_{j+1} | tau_{0:j}) as
    per-step rewards, each action weighted by its return-to-go

        R_t = sum_{j >= t} gamma^(j - t) r_j,      A_t = R_t - b_t

    over the tokens of one completion (j runs over positions; gamma 1 as the paper's finite
    horizon). A plain reward earns on the last policy token, so with no segment credit R_t is
    the sequence reward everywhere. The paper uses no baseline or a learned one [unverified];
    a baseline that does not depend on the action keeps the gradient unbiased:
    - `segment` (default): completions are cut at their segments' ends into decisions 0, 1, ...
      and a tail (the text after the last segment, where plain rewards land); b for a token of
      decision j is the group's mean reward of decisions j, j+1, ... plus its mean tail reward
      (a completion with fewer decisions counts 0 for the ones it lacks). So A at the first
      token is R - mean(R), and a tail token gets its tail reward minus the group's mean tail
      reward: closing tags and EOS are not pushed down for coming after the gains.
    - `group`: b = the group's mean total reward for every token (late tokens, whose
      return-to-go is small, then all get negative advantages; the tiny run lengthened its
      answers and collapsed with it);
    - `position`: b_t = the mean of R_t over the group's completions with a policy token at t;
    - `none`.
    `scale: group` divides each group's advantages by their root mean square over the group's
    policy tokens (+ eps): unit scale per group, as GRPO's std division gives. (Dividing by the
    std of the totals, as GRPO does, blows up a group whose totals tie while its decisions
    differ, e.g. the same sensors in another order: per-decision advantages / 1e-4; the tiny
    run's gradient norm reached 66.) Tokens outside the policy's mask get 0. `gamma` < 1 applies to `group`, `position` and `none`."""
    if baseline not in ("segment", "group", "position", "none"):
        raise ValueError(f"baseline must be segment, group, position or none, got {baseline!r}")
    if scale not in ("none", "group"):
        raise ValueError(f"scale must be none or group, got {scale!r}")
    if baseline == "segment" and gamma != 1.0:
        raise ValueError("baseline segment needs gamma 1")
    r_BGT, m_BGT = token_rewards_BGT.float(), mask_BGT.float()
    T = r_BGT.shape[-1]
    if baseline == "segment":
        A_BGT = _segment_centred(r_BGT, segments_BGK)
    else:
        if gamma == 1.0:
            A_BGT = r_BGT.flip(-1).cumsum(-1).flip(-1)
        else:
            A_BGT, running = torch.zeros_like(r_BGT), torch.zeros_like(r_BGT[..., 0])
            for t in reversed(range(T)):
                running = r_BGT[..., t] + gamma * running
                A_BGT[..., t] = running
        if baseline == "group":
            A_BGT = A_BGT - A_BGT[..., 0].mean(1, keepdim=True).unsqueeze(-1)
        elif baseline == "position":
            n_BT = m_BGT.sum(1, keepdim=True)
            A_BGT = A_BGT - (A_BGT * m_BGT).sum(1, keepdim=True) / n_BT.clamp(min=1)
    if scale == "group":   # the group's root-mean-square advantage over its policy tokens
        n_B = m_BGT.sum((1, 2)).clamp(min=1)
        rms_B = ((A_BGT * m_BGT) ** 2).sum((1, 2)).div(n_B).sqrt()
        A_BGT = A_BGT / (rms_B + eps).view(-1, 1, 1)
    return A_BGT * m_BGT


def _segment_centred(r_BGT: torch.Tensor, segments_BGK: list) -> torch.Tensor:
    """Returns-to-go over decisions with each decision's (and the tail's) reward centred by its
    group mean (returns_to_go's `segment` baseline)."""
    B, G, T = r_BGT.shape
    out = torch.zeros_like(r_BGT)
    for b in range(B):
        ends = [sorted({min(e, T) for spans in segments_BGK[b][g] if spans for _, e, _ in spans} - {0})
                for g in range(G)]
        J = max(map(len, ends), default=0)
        # per completion: reward of each decision (0 past its last) and of its tail
        r_GJ, tail_G = torch.zeros(G, J), torch.zeros(G)
        for g in range(G):
            bounds = [0] + ends[g]
            for j in range(len(ends[g])):
                r_GJ[g, j] = r_BGT[b, g, bounds[j]:bounds[j + 1]].sum()
            tail_G[g] = r_BGT[b, g, bounds[-1]:].sum()
        c_GJ, c_tail_G = r_GJ - r_GJ.mean(0), tail_G - tail_G.mean()
        future_GJ = c_GJ.flip(-1).cumsum(-1).flip(-1) + c_tail_G.unsqueeze(-1)   # decisions j.. + tail
        for g in range(G):
            bounds = [0] + ends[g]
            for j in range(len(ends[g])):
                out[b, g, bounds[j]:bounds[j + 1]] = future_GJ[g, j]
            out[b, g, bounds[-1]:] = c_tail_G[g]
    return out


@register("advantage", "hrpo")
def hrpo(rewards_BG: torch.Tensor, segments_BGK: list, mask_BGT: torch.Tensor, reward_names_K: list[str],
         action_reward: str, lam: float = 0.5, action_baseline: Literal["step", "none"] = "step",
         eps: float = 1e-4) -> torch.Tensor:
    """MasHost's Hierarchical Relative Policy Optimization (Yang et al., arXiv 2506.08507;
    algorithms_b.md §19). The paper's abstract: HRPO "collaboratively integrates group-relative
    advantages and action-wise rewards" for accuracy, efficiency and component rationality, over
    a construction MDP whose actions are role choices (node level: a role, DELETE, EXIT) and
    connections (edge level). Its method equations and lambda could not be read (the stored
    paper text stops at the introduction), so the combination is [recon]:

        A_{g,t} = (R_g - mean R) / (std R + eps) + lam * (a_{g,t} - b_t)

    R_g = the combined reward (the group-relative part, GRPO's); a_{g,t} = the score of
    decision t of completion g, the t-th segment of the reward named `action_reward` (give it
    weight 0 so it does not also enter R). `action_baseline`: `step` b_t = the mean of a_{g',t}
    over the group's completions that have a decision t (a lone decision t gets no action
    term); `none` b_t = 0, the action-wise reward taken as it is (the abstract's "rewards", not
    advantages, at the action level). lam 0.5 [unverified]. Every token of decision t's segment
    gets its A_{g,t}; tokens outside any decision get the group part alone."""
    if action_reward not in reward_names_K:
        raise ValueError(f"action_reward {action_reward!r} is not one of the recipe's rewards "
                         f"{reward_names_K}")
    if action_baseline not in ("step", "none"):
        raise ValueError(f"action_baseline must be step or none, got {action_baseline!r}")
    k = reward_names_K.index(action_reward)
    group_BG = grpo(rewards_BG, eps=eps)
    adv_BGT = group_BG.unsqueeze(-1).expand_as(mask_BGT).clone().float()
    B, G, T = mask_BGT.shape
    for b in range(B):
        spans = [segments_BGK[b][g][k] or [] for g in range(G)]
        for t in range(max(map(len, spans), default=0)):
            have = [g for g in range(G) if len(spans[g]) > t]
            if action_baseline == "step" and len(have) < 2:
                continue
            base = sum(spans[g][t][2] for g in have) / len(have) if action_baseline == "step" else 0.0
            for g in have:
                start, end, value = spans[g][t]
                adv_BGT[b, g, start:min(end, T)] += lam * (value - base)
    return adv_BGT * mask_BGT.float()
