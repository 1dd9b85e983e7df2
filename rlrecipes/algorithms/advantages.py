"""Advantage estimators: `fn(rewards_BG, **params) -> adv_BG` (float32)."""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register


@register("advantage", "grpo")
def grpo(rewards_BG: torch.Tensor, scale: Literal["group", "batch", "none"] = "group", eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantage, DeepSeekMath (arXiv 2402.03300) §4.1.2, outcome supervision:

        A_i = (r_i - mean(r_group)) / (std + eps)

    `scale`: "group" divides by each group's std, "batch" by the std of all B*G rewards
    (Dr.GRPO/TRL `scale_rewards="batch"`), "none" does not divide. std is unbiased (n-1)
    and eps = 1e-4, TRL's defaults; verl uses 1e-6 (set `eps`).
    """
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    rewards_BG = rewards_BG.float()
    centred_BG = rewards_BG - rewards_BG.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred_BG
    G = rewards_BG.shape[1]
    if scale == "group":
        std = rewards_BG.std(dim=1, keepdim=True) if G > 1 else torch.zeros_like(centred_BG[:, :1])
    else:
        std = rewards_BG.std() if rewards_BG.numel() > 1 else torch.zeros(())
    return centred_BG / (std + eps)


@register("advantage", "dr_grpo")
def dr_grpo(rewards_BG: torch.Tensor) -> torch.Tensor:
    """Dr.GRPO (arXiv 2503.20783) §3.2: A_i = r_i - mean(r_group), no std division, which removes
    the question-difficulty bias. Pair with the `constant` aggregation (their length-bias fix)."""
    rewards_BG = rewards_BG.float()
    return rewards_BG - rewards_BG.mean(dim=1, keepdim=True)


def nanstd(x: torch.Tensor, dim: int | None = None, keepdim: bool = False) -> torch.Tensor:
    """Unbiased std ignoring NaN (TRL's `nanstd`); NaN where fewer than two values remain."""
    if dim is None:
        x, dim = x.flatten(), 0
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    n = (~torch.isnan(x)).sum(dim=dim, keepdim=keepdim)
    return torch.sqrt(torch.nansum((x - mean) ** 2, dim=dim, keepdim=keepdim) / (n - 1))


@register("advantage", "gdpo")
def gdpo(rewards_BG: torch.Tensor, rewards_BGK: torch.Tensor, reward_weights_K: torch.Tensor,
         weights: list[float] | None = None, eps: float = 1e-4) -> torch.Tensor:
    """GDPO, group reward-decoupled normalisation (arXiv 2601.05242, §3; NVlabs/GDPO TRL fork):

        A_k = (R_k - mean_group R_k) / (std_group R_k + eps)     for each reward k
        pre = sum_k w_k A_k;   A = (pre - mean_batch pre) / (std_batch pre + eps)

    Unbiased std, eps 1e-4. `weights` default to the recipe's reward weights. A reward that is
    constant in a group adds 0 for that group. NaN rewards (a reward returned None) are left
    out of the statistics and a completion no reward scored gets A = 0, as TRL's
    `multi_objective_aggregation="normalize_then_sum"` does (the NVIDIA reference maps NaN to 0
    first). With one reward GDPO is GRPO on it (reference behaviour)."""
    R = rewards_BGK.float()
    w = torch.tensor(weights, dtype=torch.float32) if weights is not None else reward_weights_K.float()
    if w.numel() != R.shape[-1]:
        raise ValueError(f"gdpo: {w.numel()} weights for {R.shape[-1]} rewards")
    if R.shape[-1] == 1:
        return grpo(R[..., 0] * w[0], scale="group", eps=eps)
    G = R.shape[1]
    std_k = nanstd(R, dim=1, keepdim=True) if G > 1 else torch.zeros_like(R[:, :1])
    norm = (R - torch.nanmean(R, dim=1, keepdim=True)) / (std_k + eps)
    pre = (norm * w).nansum(-1)
    pre[torch.isnan(R).all(-1)] = float("nan")
    std = nanstd(pre) if pre.numel() > 1 else torch.zeros(())
    return torch.nan_to_num((pre - torch.nanmean(pre)) / (std + eps), nan=0.0)


@register("advantage", "rec")
def rec(rewards_BG: torch.Tensor, std_normalize: bool = False, drop: Literal["none", "balance"] = "none",
        eps: float = 1e-6) -> torch.Tensor:
    """REC advantage (arXiv 2509.24203, §4; Trinity-RFT `rec_advantage.py`): A = r - mean_group(r),
    divided by the POPULATION std + eps when `std_normalize`. `drop: balance` (RED-Drop): where a
    group has more negatives (r < mean) than positives, that many negatives, drawn at random
    (torch's seeded RNG), get A = 0 and the statistics use the kept samples; a group with at most
    one kept sample uses mean 0, std 1."""
    r = rewards_BG.float()
    keep = torch.ones_like(r, dtype=torch.bool)
    if drop == "balance":
        for b in range(r.shape[0]):
            pos = r[b] >= r[b].mean()
            neg = (~pos).nonzero().flatten()
            extra = len(neg) - int(pos.sum())
            if extra > 0:
                keep[b, neg[torch.randperm(len(neg))[:extra]]] = False
    adv = torch.zeros_like(r)
    for b in range(r.shape[0]):
        kept = r[b][keep[b]]
        mean, std = (kept.mean(), kept.std(unbiased=False)) if kept.numel() > 1 else (torch.tensor(0.0), torch.tensor(1.0))
        adv[b] = (r[b] - mean) / (std + eps) if std_normalize else r[b] - mean
    return adv * keep


@register("advantage", "asymre")
def asymre(rewards_BG: torch.Tensor, baseline_shift: float = -0.1) -> torch.Tensor:
    """AsymRE (arXiv 2509.24203, §5; Trinity-RFT `asymre_advantage.py`): A = r - (mean_group(r) +
    baseline_shift). A negative shift lowers the baseline, pushing up every sample a little."""
    r = rewards_BG.float()
    return r - (r.mean(dim=1, keepdim=True) + baseline_shift)


@register("advantage", "opmd")
def opmd(rewards_BG: torch.Tensor, baseline: Literal["mean", "logavgexp"] = "mean", tau: float = 1.0) -> torch.Tensor:
    """OPMD advantage (arXiv 2509.24203, §5; Trinity-RFT `opmd_advantage.py`): A = r - b with
    b = mean_group(r), or the soft baseline b = tau * (logsumexp(r / tau) - log G)."""
    r = rewards_BG.float()
    if baseline == "mean":
        return r - r.mean(dim=1, keepdim=True)
    b = tau * (torch.logsumexp(r / tau, dim=1, keepdim=True) - torch.log(torch.tensor(float(r.shape[1]))))
    return r - b


@register("advantage", "bnpo")
def bnpo(rewards_BG: torch.Tensor, min_value: float = 0.0, max_value: float = 1.0) -> torch.Tensor:
    """BNPO, Beta normalisation (arXiv 2506.02864, §3; changyi7231/BNPO
    `compute_bnpo_outcome_advantage`): rewards mapped to [0, 1], s = (r - min) / (max - min);
    p_b = group mean of s; over the batch's groups mu = mean p, v = unbiased var p (one group:
    mu 0, v 1); method-of-moments Beta a = (mu(1-mu)/v - 1) mu, b = (mu(1-mu)/v - 1)(1 - mu);
    normalising Beta alpha = max(1 + a/3, 1), beta = max(1 + b/3, 1);

        A = (s - p_b) / f_Beta(p_b; alpha, beta),   1/f clamped to [0, 1e6].

    alpha = beta = 1 gives f = 1: REINFORCE with the group-mean baseline."""
    if max_value <= min_value:
        raise ValueError("max_value must exceed min_value")
    s = (rewards_BG.double() - min_value) / (max_value - min_value)
    if ((s < -1e-6) | (s > 1 + 1e-6)).any():  # slack for float32 sums such as 1.0 + 0.1
        from ..errors import UserError
        raise UserError("algorithm.advantage", f"bnpo needs rewards in [min_value, max_value] = "
                        f"[{min_value}, {max_value}], got {rewards_BG.min().item():g} .. {rewards_BG.max().item():g}",
                        "set min_value/max_value to the range of the recipe's summed rewards")
    s = s.clamp(0.0, 1.0)
    B, G = s.shape
    p = s.mean(dim=1, keepdim=True) if G > 1 else torch.zeros_like(s[:, :1])
    if B > 1:
        mu, v = p.mean(), p.var()
    else:
        mu, v = torch.tensor(0.0, dtype=s.dtype), torch.tensor(1.0, dtype=s.dtype)
    k = mu * (1 - mu) / v - 1 if v > 0 else torch.tensor(0.0, dtype=s.dtype)
    alpha, beta = torch.clamp(1 + k * mu / 3, min=1.0), torch.clamp(1 + k * (1 - mu) / 3, min=1.0)
    log_f = ((alpha - 1) * torch.log(p) + (beta - 1) * torch.log1p(-p)
             - (torch.lgamma(alpha) + torch.lgamma(beta) - torch.lgamma(alpha + beta)))
    log_f = torch.where((alpha == 1) & (p == 0) | (beta == 1) & (p == 1), torch.zeros_like(log_f), log_f)
    inv_f = torch.clamp(torch.exp(-log_f), 0.0, 1e6)
    return ((s - p) * inv_f).float()


@register("advantage", "unlikeliness")
def unlikeliness(rewards_BG: torch.Tensor, seq_logp_BG: torch.Tensor, lengths_BG: torch.Tensor,
                 beta_rank: float = 0.25, eps: float = 1e-6) -> torch.Tensor:
    """Unlikeliness reward, "Rewarding the Unlikely" (He, Fried, Welleck, arXiv 2506.02355, §4;
    AndreHe02/rewarding-unlikely-release `ray_lean_trainer.py::_compute_advantages`): rank each
    group's completions by their token-mean behaviour log-prob, rank 0 = least likely, G-1 =
    most likely (ties keep batch order), and scale the reward down for likely ones before GRPO:

        r~_g = r_g * (1 - beta_rank * rank_g / G);   A = (r~ - mean r~) / (std_unbiased r~ + eps)

    A group of one uses mean 0 and std 1, as the reference does."""
    r = rewards_BG.float()
    B, G = r.shape
    mean_logp = seq_logp_BG.float() / lengths_BG.float().clamp(min=1)
    rank = mean_logp.argsort(dim=1, stable=True).argsort(dim=1).float()
    shaped = r * (1 - beta_rank * rank / G)
    if G == 1:
        return shaped / (1 + eps)
    return grpo(shaped, scale="group", eps=eps)


@register("advantage", "oblr")
class OBLR:
    """OBLR-PO (Huang, Sheng, Zheng, arXiv 2511.23310, abstract and §3 [recon]; no reference code).

    Baseline: the variance-minimising baseline weighs each completion by its squared
    score-function norm, b* = sum_g w_g r_g / sum_g w_g with w_g = ||grad log pi(o_g|q)||^2, and
    A_g = r_g - b*. Per-sample gradient norms cost a backward each, so w_g = |o_g| (the squared
    norm grows about linearly with length) is used, a documented proxy; `weight: uniform` gives
    the group mean (REINFORCE with a mean baseline).

    Learning rate (`snr_lr`, formula [unverified]): each optimizer step's rate is multiplied by
    SNR / (1 + SNR), SNR = ||g||^2 / (mean_i ||g_i - g||^2 / M) from the M micro-batch
    gradient estimates g_i of the mini-batch gradient g. It needs micro_batch_size to split a
    mini-batch in two or more; with one micro-batch the rate is left alone. The loop calls
    `lr_scale` before each optimizer step of a component that has it."""

    def __init__(self, weight: Literal["length", "uniform"] = "length", snr_lr: bool = True):
        self.weight, self.snr_lr = weight, snr_lr

    def __call__(self, rewards_BG: torch.Tensor, lengths_BG: torch.Tensor) -> torch.Tensor:
        r = rewards_BG.float()
        w = lengths_BG.float().clamp(min=1) if self.weight == "length" else torch.ones_like(r)
        return r - (w * r).sum(1, keepdim=True) / w.sum(1, keepdim=True)

    def lr_scale(self, micro_grads: list[torch.Tensor]) -> tuple[float, dict]:
        """Factor for this optimizer step from each micro-batch's share of the gradient (flat)."""
        M = len(micro_grads)
        if not self.snr_lr or M < 2:
            return 1.0, {}
        g_i = torch.stack(micro_grads).double() * M   # each micro-batch's estimate of the gradient
        g = g_i.mean(0)
        noise = ((g_i - g) ** 2).sum(1).mean() / M
        if noise == 0:  # identical shares: no noise to scale for
            return 1.0, {"oblr/lr_factor": 1.0}
        snr = (g.pow(2).sum() / noise).item()
        return snr / (1 + snr), {"oblr/snr": snr, "oblr/lr_factor": snr / (1 + snr)}
