"""Policy losses whose terms compare the completions of one prompt with each other.

They need whole groups in every micro-batch: the loop passes `group_size`, and `validate`
checks that mini- and micro-batches are multiples of it. Groups are consecutive rows.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from ..registry import register
from .losses import _broadcast, _seq_mean


def _leading_run(flags_GT: torch.Tensor) -> torch.Tensor:
    """Keep only the leading contiguous run of True along T."""
    return torch.cumprod(flags_GT.long(), dim=-1).bool()


def _conflicts(ids_GT, valid_GT, pos_G, neg_G):
    """Tokens whose (position, id) occurs in >= 1 positive and >= 1 negative completion."""
    same_GGT = (ids_GT.unsqueeze(1) == ids_GT.unsqueeze(0)) & valid_GT.unsqueeze(0) & valid_GT.unsqueeze(1)
    in_pos = (same_GGT & pos_G.view(1, -1, 1)).any(1)
    in_neg = (same_GGT & neg_G.view(1, -1, 1)).any(1)
    return in_pos & in_neg & valid_GT


def _right_align(x_GT, lengths_G, fill=0):
    """Row i's first lengths[i] entries, reversed, so that index 0 is the last valid token."""
    T = x_GT.shape[1]
    idx = (lengths_G.unsqueeze(1) - 1 - torch.arange(T, device=x_GT.device)).clamp(min=0)
    out = torch.gather(x_GT, 1, idx)
    valid = torch.arange(T, device=x_GT.device) < lengths_G.unsqueeze(1)
    return torch.where(valid, out, torch.full_like(out, fill)), valid


def gtpo_weights(ids_GT, mask_GT, adv_G, conflict_weight: float = 2.0):
    """(delta_GT, n_conflict_G) of GTPO (arXiv 2508.03772, §3): conflict tokens are shared by a
    positive and a negative completion at the same position counted from the start (leading run)
    or from the end (leading run from the end); they get weight conflict_weight in positive and
    0 in negative completions, 1 elsewhere."""
    valid = mask_GT.bool()
    pos, neg = adv_G > 0, adv_G < 0
    fwd = _leading_run(_conflicts(ids_GT, valid, pos, neg))
    lengths = valid.sum(1)
    ids_r, valid_r = _right_align(ids_GT, lengths)
    bwd_r = _leading_run(_conflicts(ids_r, valid_r, pos, neg))
    bwd, _ = _right_align(bwd_r.long(), lengths)  # reversing twice restores the order
    bwd = bwd.bool() & valid
    w = torch.where(pos, conflict_weight, 0.0).unsqueeze(1).to(mask_GT.dtype)
    delta = torch.where(fwd, w, 1.0) * torch.where(bwd, w, 1.0) * mask_GT
    n_conf = (fwd | bwd).sum(1).clamp(min=1)
    return delta, n_conf


@register("loss", "gtpo")
def gtpo(logp_NT, old_logp_NT, adv_N, mask_NT, ids_NT, entropy_NT, group_size,
         entropy_threshold: float = 0.7, entropy_scale: float = 0.1, conflict_weight: float = 2.0):
    """GTPO, Group-relative Trajectory-based PO (Simoni et al., arXiv 2508.03772; constants from the
    authors' gtpo_training.py): completions with mean token entropy H > 0.7 get A = 0, the others
    A - 0.1 H; conflict-token weights delta from the original advantage signs; per completion
    l_t = -rho_t A delta_t / n_conflict with rho = exp(logp - old_logp). No KL (set beta 0); use
    aggregation seq_mean_token_mean (mean over completions of the token mean, as the code)."""
    G = group_size
    H_N = _seq_mean(entropy_NT.detach(), mask_NT)
    shaped_N = torch.where(H_N <= entropy_threshold, adv_N - entropy_scale * H_N, torch.zeros_like(adv_N))
    delta, n_conf = _grouped(ids_NT, mask_NT, adv_N, G, conflict_weight)
    ratio_NT = torch.exp(logp_NT - old_logp_NT)
    loss_NT = -ratio_NT * shaped_N.unsqueeze(-1) * delta / n_conf.unsqueeze(-1)
    with torch.no_grad():
        metrics = {"gtpo_dropped_frac": (H_N > entropy_threshold).float().mean(),
                   "gtpo_conflict_tokens": n_conf.float().mean()}
    return loss_NT, metrics


def _grouped(ids_NT, mask_NT, adv_N, G, conflict_weight):
    parts = [gtpo_weights(ids_NT[i:i + G], mask_NT[i:i + G], adv_N[i:i + G], conflict_weight)
             for i in range(0, len(adv_N), G)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@register("loss", "disco")
def disco(logp_NT, old_logp_NT, mask_NT, rewards_N, group_size, score: Literal["logL", "Lratio"] = "logL", tau: float = 10.0,
          delta: float = 1e-4, beta: float = 1e3, balanced: bool = False):
    """DisCO, discriminative constrained optimization (Li et al., arXiv 2505.12366, eq. 9-11; verl
    recipe/disco): per prompt J = mean_{o+} s(o) - tau log mean_{o-} exp(s(o)/tau) (DisCO-b,
    `balanced`: mean_{o+} s - mean_{o-} s), s = token-mean logp (logL) or token-mean ratio
    (Lratio); loss = -mean_q J + beta max(0, KL - delta)^2 with KL = token-mean(old_logp - logp)
    [estimator unverified]. Positives are reward > 0.5 (binary rewards); groups without both kinds
    carry no term. Paper: delta 1e-4, beta 1e3, tau 10 (logL) / 1 (Lratio). Aggregation
    seq_mean_token_mean; the advantage estimator is unused."""
    if score not in ("logL", "Lratio"):
        raise ValueError("score must be logL or Lratio")
    s_N = _seq_mean(logp_NT if score == "logL" else torch.exp(logp_NT - old_logp_NT), mask_NT)
    G = group_size
    s_BG, pos_BG = s_N.view(-1, G), (rewards_N > 0.5).view(-1, G)
    neg_BG = ~pos_BG
    n_pos, n_neg = pos_BG.sum(1), neg_BG.sum(1)
    mean_pos = (s_BG * pos_BG).sum(1) / n_pos.clamp(min=1)
    if balanced:
        neg_term = (s_BG * neg_BG).sum(1) / n_neg.clamp(min=1)
    else:
        masked = torch.where(neg_BG, s_BG / tau, torch.full_like(s_BG, -math.inf))
        neg_term = tau * (torch.logsumexp(masked, 1) - torch.log(n_neg.clamp(min=1).float()))
    active = (n_pos > 0) & (n_neg > 0)
    J_B = torch.where(active, mean_pos - neg_term, torch.zeros_like(mean_pos))
    m = mask_NT.float()
    kl = ((old_logp_NT - logp_NT) * m).sum() / m.sum().clamp(min=1)
    penalty = beta * torch.clamp(kl - delta, min=0) ** 2
    loss_N = (-J_B).repeat_interleave(G) + penalty
    with torch.no_grad():
        metrics = {"disco_J": J_B[active].mean() if active.any() else torch.zeros(()),
                   "disco_kl": kl, "disco_active_frac": active.float().mean()}
    return _broadcast(loss_N, mask_NT), metrics


@register("loss", "reg_grpo")
def reg_grpo(logp_NT, old_logp_NT, mask_NT, rewards_N, group_size, eps: float = 1e-4):
    """Reg-GRPO (DeepVideo-R1, §3.2): regress the group-normalised sequence log-ratio
    rho_i = sum_t (logp - old_logp) onto the group-normalised reward, loss = mean_i (A_i - A_theta,i)^2
    (population std; no clip, no min). Groups with equal rewards carry no signal and are masked.
    sqrt(var + eps^2) keeps the gradient finite at the first update, where every rho is 0; eps also
    sets how far the policy must move to fit (the recipe uses 0.1, see recipes/reg_grpo.yaml).
    Add the KL term with algorithm.kl.beta. Aggregation seq_mean_token_mean."""
    G = group_size
    rho_BG = ((logp_NT - old_logp_NT) * mask_NT).sum(-1).view(-1, G)
    r_BG = rewards_N.view(-1, G).float()
    r_std = r_BG.std(1, unbiased=False, keepdim=True)
    target = (r_BG - r_BG.mean(1, keepdim=True)) / (r_std + eps)
    centred = rho_BG - rho_BG.mean(1, keepdim=True)
    pred = centred / torch.sqrt(centred.pow(2).mean(1, keepdim=True) + eps ** 2)
    active = (r_std > 0).expand_as(target)
    loss_N = torch.where(active, (target - pred) ** 2, torch.zeros_like(pred)).reshape(-1)
    with torch.no_grad():
        metrics = {"reg_grpo_active_frac": active.float().mean()}
    return _broadcast(loss_N, mask_NT), metrics
