"""SALT, step-level advantage assignment over a trajectory graph (Li et al., "SALT: Step-level
Advantage Assignment for Long-horizon Agents via Trajectory Graph", arXiv 2510.20022, EACL 2026
Findings) [recon: the paper body was not available; the formulas follow papers/next/salt.md §2].

The G trajectories of one prompt form a graph: a step is one action of the policy (a maximal run
of policy tokens, mask_BGT == 1, between tool observations) and steps with the same key are one
edge. The edge's advantage is the mean of the base (trajectory) advantages of the trajectories
through it, each counted once:

    A_g = base(R)_g  (GRPO or RLOO);   A^_e = (1 / |M(e)|) sum_{g in M(e)} A_g

and every token of every action on edge e gets A^_e (observation tokens get 0).

Keys (`merge`):
- `history`: the completion's token ids up to and including the action (the prompt is shared
  in a group), a prefix tree. Merged copies then have the same tokens in the same context, so
  the summed policy gradient equals GRPO's exactly under token-sum aggregation (salt.md §2; a
  test checks it): history keys change the update only through per-sequence length
  normalisation, clipping once ratios move, or normalisation after refinement.
- `state`: (sigma(steps so far), the action's token ids), different histories that reach the same
  environment state merge (a DAG). sigma is read from the rollout's own tokens (`state`):
  `facts` = the set of (action, observation) pairs so far (order and repeats forgotten: the
  state of a read-only, deterministic tool such as a lookup, where it is the set of queries
  asked) or `observation` = the last observation alone (a Markov environment that shows its
  whole state, e.g. a web page). The paper's state definition is [unverified].

Deviation: the spec's worked examples use the population std; `base: grpo` here is the project's
`grpo` (unbiased std, as DeepSeekMath/TRL), a common factor sqrt(G / (G - 1)).
"""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register
from .advantages import grpo


def action_steps(mask_T: list[int]) -> list[tuple[int, int]]:
    """[start, end) of every maximal run of policy tokens (mask 1)."""
    spans, start = [], None
    for t, m in enumerate(mask_T + [0]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            spans.append((start, t))
            start = None
    return spans


def step_keys(ids_T: list[int], spans: list[tuple[int, int]], merge: str, state: str) -> list[tuple]:
    """The key of each action step of one completion (see the module docstring). A history key
    also holds where the action starts: the same tokens sampled in one trajectory and returned
    by the tool in another are not the same action."""
    if merge == "history":
        return [(start, tuple(ids_T[:end])) for start, end in spans]
    keys, facts, last = [], set(), ()
    for k, (start, end) in enumerate(spans):
        action = tuple(ids_T[start:end])
        keys.append((frozenset(facts) if state == "facts" else last, action))
        if k + 1 < len(spans):  # the observation between this action and the next
            last = tuple(ids_T[end:spans[k + 1][0]])
            facts.add((action, last))
    return keys


def base_advantage(rewards_BG: torch.Tensor, base: str, eps: float) -> torch.Tensor:
    """GRPO (DeepSeekMath, arXiv 2402.03300, §4.1.2) or RLOO (Ahmadian et al., arXiv 2402.14740,
    eq. 6: A_g = R_g - mean of the other G - 1 rewards = G / (G - 1) (R_g - mean R))."""
    if base == "grpo":
        return grpo(rewards_BG, eps=eps)
    G = rewards_BG.shape[1]
    centred = rewards_BG.float() - rewards_BG.float().mean(1, keepdim=True)
    return centred * (G / (G - 1)) if G > 1 else torch.zeros_like(centred)


def salt_advantages(rewards_BG: torch.Tensor, mask_BGT: torch.Tensor, ids_BGT: torch.Tensor,
                    base: str = "grpo", merge: str = "history", state: str = "facts",
                    eps: float = 1e-6) -> tuple[torch.Tensor, dict]:
    """(adv_BGT, metrics): SALT's per-token advantages and `salt/merged_frac` (share of action
    steps on an edge with >= 2 trajectories), `salt/cross_history_frac` (share on an edge reached
    through >= 2 different histories: what state keys add to history keys, 0 under history),
    `salt/adv_abs_shared` (mean |A^| of merged steps), `salt/edges_per_group`, `salt/steps`
    (actions per trajectory)."""
    A_BG = base_advantage(rewards_BG, base, eps)
    B, G, T = mask_BGT.shape
    adv_BGT = torch.zeros(B, G, T)
    n_steps, n_shared, n_cross, abs_shared, n_edges = 0, 0, 0, 0.0, 0
    for b in range(B):
        steps = []   # (g, start, end, key)
        members: dict[tuple, set[int]] = {}
        paths: dict[tuple, set[tuple]] = {}   # the distinct histories that reach each edge
        for g in range(G):
            ids = ids_BGT[b, g].tolist()
            spans = action_steps([int(m) for m in mask_BGT[b, g].tolist()])
            keys = step_keys(ids, spans, merge, state)
            for (start, end), key, path in zip(spans, keys, step_keys(ids, spans, "history", state)):
                steps.append((g, start, end, key))
                members.setdefault(key, set()).add(g)
                paths.setdefault(key, set()).add(path)
        value = {key: A_BG[b, sorted(gs)].mean().item() for key, gs in members.items()}
        for g, start, end, key in steps:
            adv_BGT[b, g, start:end] = value[key]
            if len(members[key]) > 1:
                n_shared += 1
                abs_shared += abs(value[key])
            n_cross += len(paths[key]) > 1
        n_steps += len(steps)
        n_edges += len(members)
    metrics = {"salt/merged_frac": n_shared / max(n_steps, 1), "salt/cross_history_frac": n_cross / max(n_steps, 1),
               "salt/adv_abs_shared": abs_shared / n_shared if n_shared else 0.0,
               "salt/edges_per_group": n_edges / max(B, 1), "salt/steps": n_steps / max(B * G, 1)}
    return adv_BGT, metrics


@register("advantage", "salt")
class SALT:
    """SALT (arXiv 2510.20022) [recon]: see the module docstring. `base`: the trajectory
    advantage (grpo | rloo, both in the paper per a secondary summary [unverified]); `merge`:
    history | state; `state`: facts | observation (with `merge: state`); `eps`: GRPO's std
    epsilon (verl's 1e-6). Stateless; a class only to report the step's graph metrics."""

    def __init__(self, base: Literal["grpo", "rloo"] = "grpo", merge: Literal["history", "state"] = "history",
                 state: Literal["facts", "observation"] = "facts", eps: float = 1e-6):
        for name, value, allowed in (("base", base, ("grpo", "rloo")), ("merge", merge, ("history", "state")),
                                     ("state", state, ("facts", "observation"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        self.base, self.merge, self.state, self.eps = base, merge, state, eps
        self.metrics: dict = {}

    def __call__(self, rewards_BG: torch.Tensor, mask_BGT: torch.Tensor, ids_BGT: torch.Tensor) -> torch.Tensor:
        adv_BGT, self.metrics = salt_advantages(rewards_BG, mask_BGT, ids_BGT, self.base, self.merge,
                                                self.state, self.eps)
        return adv_BGT

    def after_update(self, info) -> dict:
        """The step's graph metrics (the loop reports what `after_update` returns)."""
        return dict(self.metrics)
