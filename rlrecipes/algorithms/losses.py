"""Policy losses (per token) and their aggregation to a scalar, side by side as in OpenRLHF.

A loss: `fn(logp_NT, old_logp_NT, adv_N, mask_NT, **params) -> (loss_NT, metrics)`.
An aggregation: `fn(loss_NT, mask_NT, max_len) -> (numerator, denominator)`; the scalar loss is
numerator / denominator. Splitting them lets the loop accumulate micro-batches exactly: the
denominator depends only on the mask, so it is summed over a mini-batch before any backward.
N = B*G sequences, T = completion tokens.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..registry import register
from ..rollout.generate import pad_to, stack


@register("loss", "ppo_clip")
def ppo_clip(logp_NT, old_logp_NT, adv_N, mask_NT, eps_low: float = 0.2, eps_high: float = 0.2,
             dual_clip: float | None = None):
    """PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, eq. 7) as used by GRPO
    (DeepSeekMath, arXiv 2402.03300, eq. 3), with decoupled clip-higher (DAPO, arXiv 2503.14476,
    eq. 10: eps_low 0.2, eps_high 0.28) and optional dual clip (Ye et al. 2020, arXiv 1912.09729,
    eq. 5: for A < 0 the objective is bounded below by dual_clip * A, dual_clip > 1).

        rho_t = exp(logp - old_logp);  l_t = -min(rho_t A, clip(rho_t, 1-eps_low, 1+eps_high) A)

    `adv_N` is one advantage per sequence [N] or per token [N, T] (token-level credit, credit.py).
    """
    adv_NT = adv_N.unsqueeze(-1) if adv_N.dim() == 1 else adv_N
    ratio_NT = torch.exp(logp_NT - old_logp_NT)
    clipped_NT = torch.clamp(ratio_NT, 1 - eps_low, 1 + eps_high)
    objective_NT = torch.min(ratio_NT * adv_NT, clipped_NT * adv_NT)
    if dual_clip is not None:
        objective_NT = torch.where(adv_NT < 0, torch.max(objective_NT, dual_clip * adv_NT), objective_NT)
    with torch.no_grad():
        m = mask_NT.bool()
        low = (ratio_NT < 1 - eps_low) & (adv_NT < 0)
        high = (ratio_NT > 1 + eps_high) & (adv_NT > 0)
        n = m.sum().clamp(min=1)
        metrics = {"clip_frac": ((low | high) & m).sum() / n,
                   "ratio_mean": (ratio_NT * m).sum() / n}
    return -objective_NT, metrics


ppo_clip.token_advantages = True  # adv_N may be [N, T]


def _broadcast(loss_N, mask_NT):
    """A per-sequence loss as a per-token tensor: with `seq_mean_token_mean` aggregation it
    reduces to mean_N(loss_N), with the same gradient."""
    return loss_N.unsqueeze(-1).expand_as(mask_NT)


def _seq_mean(x_NT, mask_NT):
    return (x_NT * mask_NT).sum(-1) / mask_NT.sum(-1).clamp(min=1)


@register("loss", "gspo")
def gspo(logp_NT, old_logp_NT, adv_N, mask_NT, eps_low: float = 3e-4, eps_high: float = 4e-4):
    """GSPO, Group Sequence Policy Optimization (Zheng et al., arXiv 2507.18071, eq. 5-7): PPO-clip
    on the length-normalised sequence ratio s_i = exp(mean_t(logp - old_logp)); the paper's
    clip range is 3e-4 / 4e-4. Per-sequence loss; use aggregation seq_mean_token_mean (TRL's
    importance_sampling_level="sequence" with loss_type="grpo")."""
    ratio_N = torch.exp(_seq_mean(logp_NT - old_logp_NT, mask_NT))
    clipped_N = torch.clamp(ratio_N, 1 - eps_low, 1 + eps_high)
    loss_N = -torch.min(ratio_N * adv_N, clipped_N * adv_N)
    with torch.no_grad():
        clipped = ((ratio_N < 1 - eps_low) & (adv_N < 0)) | ((ratio_N > 1 + eps_high) & (adv_N > 0))
        metrics = {"clip_frac": clipped.float().mean(), "ratio_mean": ratio_N.mean()}
    return _broadcast(loss_N, mask_NT), metrics


REC_CLIP = ("none", "one-side", "two-side", "ring", "gspo-one-side")
REC_WEIGHT = ("none", "importance_sampling", "truncated_importance_sampling", "advantage")


@register("loss", "rec")
def rec(logp_NT, old_logp_NT, adv_N, mask_NT,
        clip_mode: Literal["none", "one-side", "two-side", "ring", "gspo-one-side"] = "one-side",
        weight: Literal["none", "importance_sampling", "truncated_importance_sampling", "advantage"] = "none",
        eps_low: float = 0.2, eps_high: float = 0.2, eps_low_ring: float = 0.6,
        eps_high_ring: float = 2.0, temp: float = 1.0):
    """REC, group-relative REINFORCE with clipping as a mask (Yao, Chen et al., arXiv 2509.24203,
    §4; Trinity-RFT RECPolicyLossFn): l_t = -w_t * A * logp_t * 1[in range], the ratio
    rho = exp(logp - old_logp) detached. clip_mode: none | one-side ((A>=0 and rho<=1+eps_h) or
    (A<=0 and rho>=1-eps_l)) | two-side | ring (two-side, plus A>=0 and rho<=1-eps'_l, plus A<=0
    and rho>=1+eps'_h) | gspo-one-side (one-side on the sequence ratio). weight: none | importance_
    sampling (A*rho) | truncated_importance_sampling (A*clip(rho, 1-eps'_l, 1+eps'_h)) | advantage
    (A*exp(A/temp), RED-Weight). GRPO = one-side + importance_sampling (+ std advantage)."""
    if clip_mode not in REC_CLIP or weight not in REC_WEIGHT:
        raise ValueError(f"clip_mode in {REC_CLIP}, weight in {REC_WEIGHT}")
    adv_NT = adv_N.unsqueeze(-1).expand_as(logp_NT)
    ratio_NT = torch.exp(logp_NT - old_logp_NT).detach()
    if clip_mode == "gspo-one-side":
        test_NT = torch.exp(_seq_mean(logp_NT - old_logp_NT, mask_NT)).detach().unsqueeze(-1).expand_as(logp_NT)
    else:
        test_NT = ratio_NT
    lo, hi = test_NT >= 1 - eps_low, test_NT <= 1 + eps_high
    one_side = ((adv_NT >= 0) & hi) | ((adv_NT <= 0) & lo)
    keep = {"none": torch.ones_like(lo), "one-side": one_side, "gspo-one-side": one_side,
            "two-side": lo & hi,
            "ring": (lo & hi) | ((adv_NT >= 0) & (test_NT <= 1 - eps_low_ring))
            | ((adv_NT <= 0) & (test_NT >= 1 + eps_high_ring))}[clip_mode]
    w_NT = {"none": adv_NT, "importance_sampling": adv_NT * ratio_NT,
            "truncated_importance_sampling": adv_NT * ratio_NT.clamp(1 - eps_low_ring, 1 + eps_high_ring),
            "advantage": adv_NT * torch.exp(adv_NT / temp)}[weight]
    loss_NT = -w_NT * logp_NT * keep
    with torch.no_grad():
        m = mask_NT.bool()
        metrics = {"clip_frac": ((~keep) & m).sum() / m.sum().clamp(min=1),
                   "ratio_mean": (ratio_NT * m).sum() / m.sum().clamp(min=1)}
    return loss_NT, metrics


@register("loss", "mdpo")
def mdpo(logp_NT, old_logp_NT, adv_N, mask_NT, step, total_steps, min_t: float = 1e-3,
         kl_estimator: Literal["rho_log_rho", "control_variate"] = "control_variate"):
    """On-policy MDPO (Tomar et al., "Mirror Descent Policy Optimization", arXiv 2005.09814, §4):
    l_t = -rho_t A + (1/t_k) KL_t, no clipping, pi_k = the rollout policy, t_k = 1 - k/K annealing
    the step size (k = step - 1 of K = train.steps, clamped at min_t); the paper's m inner steps
    are train.ppo_epochs.

    KL(pi_theta || pi_k) from samples of pi_k: `rho_log_rho` is rho log rho (the spec's form);
    `control_variate` (default) subtracts rho - 1, whose mean under pi_k is 0: same expectation,
    never negative, and no gradient at rho = 1. Deviation, and why: with rho log rho each sampled
    token gets gradient (1/t_k) grad(logp) at rho = 1, zero only on average; on small batches it
    pushes sampled tokens down and entropy up (the tiny preset collapsed with it)."""
    log_ratio_NT = logp_NT - old_logp_NT
    ratio_NT = torch.exp(log_ratio_NT)
    t_k = max(min_t, 1.0 - (step - 1) / max(1, total_steps))
    adv_NT = adv_N.unsqueeze(-1) if adv_N.dim() == 1 else adv_N
    kl_NT = ratio_NT * log_ratio_NT
    if kl_estimator == "control_variate":
        kl_NT = kl_NT - (ratio_NT - 1)
    loss_NT = -ratio_NT * adv_NT + (1.0 / t_k) * kl_NT
    m = mask_NT.bool()
    with torch.no_grad():
        metrics = {"ratio_mean": (ratio_NT * m).sum() / m.sum().clamp(min=1), "mdpo_inv_t": 1.0 / t_k,
                   "mdpo_kl": (kl_NT * m).sum() / m.sum().clamp(min=1)}
    return loss_NT, metrics


mdpo.token_advantages = True  # adv_N may be [N, T]


@register("loss", "r2vpo")
class R2VPO:
    """R2VPO, ratio-variance regularised PO (Luo et al., arXiv 2601.03320) [recon from the abstract]:
    no clipping; L = -mean(rho A) + lambda (Var(rho) - delta) over the batch's valid tokens, with
    lambda updated by dual ascent lambda <- max(0, lambda + eta (Var - delta)) after each call.
    Per token the penalty is lambda ((rho_t - mean rho)^2 - delta), so use aggregation token_mean.

    `replay: K` keeps the last K batches (completions, behaviour log-probs, advantages) and
    trains on them again next to each fresh batch: rho of a stale sample is taken against the
    policy that generated it, and the ratio-variance term down-weights what has drifted (the
    paper's replay of stale samples [recon]). lambda and the buffer are saved in checkpoints."""

    def __init__(self, delta: float = 0.02, eta: float = 0.5, lambda_init: float = 0.0, replay: int = 0):
        if replay < 0:
            raise ValueError("replay must be >= 0")
        self.delta, self.eta, self.lam, self.replay = delta, eta, lambda_init, replay
        self.buffer: list[tuple] = []

    token_advantages = True  # adv_N may be [N, T] (not with replay: credit.check refuses it)

    def __call__(self, logp_NT, old_logp_NT, adv_N, mask_NT):
        ratio_NT = torch.exp(logp_NT - old_logp_NT)
        m = mask_NT.float()
        n = m.sum().clamp(min=1)
        mean = (ratio_NT * m).sum() / n
        sq_NT = (ratio_NT - mean) ** 2
        adv_NT = adv_N.unsqueeze(-1) if adv_N.dim() == 1 else adv_N
        loss_NT = -ratio_NT * adv_NT + self.lam * (sq_NT - self.delta)
        var = ((sq_NT * m).sum() / n).item()
        metrics = {"ratio_var": var, "r2vpo_lambda": self.lam, "ratio_mean": mean.detach()}
        self.lam = max(0.0, self.lam + self.eta * (var - self.delta))
        return loss_NT, metrics

    def replay_batch(self, rollout, adv_N, old_NT, reward_N, pad_id: int):
        """The fresh batch followed by the kept ones (padded to one width); keeps the fresh one."""
        if not self.replay:
            return rollout, adv_N, old_NT, reward_N
        past = list(self.buffer)
        fresh = rollout.to("cpu")
        fresh.stats = {}
        self.buffer = (self.buffer + [(fresh, adv_N.cpu(), old_NT.cpu(), reward_N.cpu())])[-self.replay:]
        if not past:
            return rollout, adv_N, old_NT, reward_N
        dev = old_NT.device
        joined = stack([rollout] + [p[0].to(dev) for p in past], pad_id)
        T = joined.completion_ids_NT.shape[1]
        old = torch.cat([pad_to(o.to(dev), T, 0, left=False) for o in [old_NT] + [p[2] for p in past]])
        adv = torch.cat([adv_N] + [p[1].to(adv_N.device) for p in past])
        rewards = torch.cat([reward_N] + [p[3].to(reward_N.device) for p in past])
        return joined, adv, old, rewards

    def state_dict(self) -> dict:
        return {"lambda": self.lam, "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.lam = state["lambda"]
        self.buffer = list(state.get("buffer", []))


@register("aggregation", "token_mean")
def token_mean(loss_NT, mask_NT, max_len: int):
    """Mean over all unmasked tokens of the batch (DAPO, arXiv 2503.14476, eq. 12; TRL `dapo`/`bnpo`)."""
    return (loss_NT * mask_NT).sum(), mask_NT.sum().clamp(min=1)


@register("aggregation", "seq_mean_token_mean")
def seq_mean_token_mean(loss_NT, mask_NT, max_len: int):
    """Mean over sequences of each sequence's token mean (GRPO, arXiv 2402.03300, eq. 3; TRL `grpo`)."""
    per_seq_N = (loss_NT * mask_NT).sum(-1) / mask_NT.sum(-1).clamp(min=1)
    return per_seq_N.sum(), torch.tensor(float(loss_NT.shape[0]))


@register("aggregation", "seq_mean_token_sum")
def seq_mean_token_sum(loss_NT, mask_NT, max_len: int):
    """Mean over sequences of each sequence's token sum (verl `seq-mean-token-sum`)."""
    return (loss_NT * mask_NT).sum(), torch.tensor(float(loss_NT.shape[0]))


@register("aggregation", "constant")
def constant(loss_NT, mask_NT, max_len: int):
    """Token sum over N * max_len, a constant (Dr.GRPO, arXiv 2503.20783, §3.2; TRL `dr_grpo`).
    max_len is `generation.max_new_tokens`."""
    return (loss_NT * mask_NT).sum(), torch.tensor(float(loss_NT.shape[0] * max_len))


def aggregate(name: str, loss_NT, mask_NT, max_len: int):
    """Scalar loss of one batch under the named aggregation."""
    from ..registry import get
    num, den = get("aggregation", name)(loss_NT, mask_NT, max_len=max_len)
    return num / den
