"""Advantage estimators that keep state across steps (saved in checkpoints): SPO's per-prompt
value tracker and RiskPO's quantile tracker. Each is a class; the loop builds it once with the
YAML parameters and calls it like a function with the step's rewards."""
from __future__ import annotations

import json
from typing import Literal

import torch

from ..registry import register
from ..rollout.generate import pad_to, stack


@register("advantage", "spo")
class SPO:
    """SPO, Single-stream Policy Optimization (Xu & Ding, arXiv 2509.13232, §3; verl recipe/spo
    `spo_ray_trainer.py`). A persistent Beta tracker per prompt replaces the group baseline:

        p^ = alpha / (alpha + beta)  (before this step's update);  A = r - p^,
        then over the whole batch A <- (A - mean A) / (std A + 1e-8)   (unbiased std).

    After the step's optimizer updates: alpha <- rho alpha + r, beta <- rho beta + (1 - r), with
    r clipped to [0, 1]; G > 1 completions per prompt add their sum (the paper uses G = 1).
    `rho: kl` adapts the forgetting rate to how far the policy moved on that prompt:
    D = token-mean |log pi_then - log pi_now| on the response stored at its previous visit,
    rho = 2^(-D / d_half), clipped to [rho_min, rho_max]; a first visit has D = 0. Both log-probs
    are taken after an update, as the reference does. `rho: constant` uses `rho_value`.

    Offline values (the reference's `offline_values`, `offline_N = 8`): at the first step every
    training prompt is sampled `offline_n` times with the policy the RL stage starts from and
    scored (pass = total reward above `threshold`, s passes); then with N0 = 1 / (1 - rho_min),
    alpha0 = N0 (s + 0.5) / (n + 1), beta0 = N0 (n - s + 0.5) / (n + 1). `offline_values`: a JSON
    file {question: [scores]} as the reference's estimation script writes, used instead of
    sampling. A prompt with no offline value starts at alpha = beta = 0.5. Under several
    processes every rank samples the offline values itself, and each rank stores the responses
    it drew, so a prompt drawn by another rank than last time counts as a first visit (D = 0)."""

    def __init__(self, offline_n: int = 8, offline_values: str | None = None,
                 rho: Literal["kl", "constant"] = "kl", rho_value: float = 0.875, rho_min: float = 0.875,
                 rho_max: float = 0.96, d_half: float = 0.06, threshold: float = 0.0, eps: float = 1e-8):
        if not 0 < rho_min <= rho_max < 1:
            raise ValueError("need 0 < rho_min <= rho_max < 1")
        self.offline_n, self.offline_values, self.threshold = offline_n, offline_values, threshold
        self.rho, self.rho_value, self.rho_min, self.rho_max, self.d_half = rho, rho_value, rho_min, rho_max, d_half
        self.eps = eps
        self.alpha: dict[int, float] = {}
        self.beta: dict[int, float] = {}
        self.stored: dict[int, tuple] = {}  # row -> (one-row Rollout on CPU, its log-probs then)
        self.initialized = offline_n == 0 and offline_values is None
        self._pending: tuple[list[int], torch.Tensor] | None = None

    def p_hat(self, rows) -> torch.Tensor:
        a = torch.tensor([self.alpha.get(int(i), 0.5) for i in rows], dtype=torch.float64)
        b = torch.tensor([self.beta.get(int(i), 0.5) for i in rows], dtype=torch.float64)
        return (a / (a + b)).float()

    def init_values(self, rows: list[int], passes: list[int], n: int) -> None:
        """alpha0, beta0 of `rows` from `passes` out of `n` offline samples each."""
        n_init = 1 / (1 - self.rho_min)
        for i, s in zip(rows, passes):
            self.alpha[i] = n_init * (s + 0.5) / (n + 1)
            self.beta[i] = n_init * (n - s + 0.5) / (n + 1)

    def refine(self, batch) -> None:
        """At the first step: the offline values of every training prompt."""
        if self.initialized:
            return
        self.initialized = True
        if self.offline_values:
            scores = json.loads(open(self.offline_values).read())
            rows, passes, n = [], [], 0
            for i, row in enumerate(batch.train_rows):
                found = scores.get(batch.question_of(row).strip())
                if found:
                    rows.append(i)
                    passes.append(sum(int(x > self.threshold) for x in found[:self.offline_n or None]))
                    n = len(found[:self.offline_n or None])
            self.init_values(rows, passes, n)
            batch.metrics["spo/offline_found"] = len(rows) / max(1, len(batch.train_rows))
            return
        from ..rollout.samplers import score_pool
        rows = list(range(len(batch.train_rows)))
        passed = score_pool(batch, rows, self.offline_n, self.threshold)
        self.init_values(rows, passed.sum(1).tolist(), self.offline_n)
        batch.metrics["spo/offline_pass_rate"] = passed.float().mean().item()

    def __call__(self, rewards_BG: torch.Tensor, row_ids_B: torch.Tensor) -> torch.Tensor:
        r = rewards_BG.float()
        rows = row_ids_B.tolist()
        raw = r - self.p_hat(rows).unsqueeze(1)
        self._pending = (rows, r)
        if raw.numel() < 2:
            return raw
        return (raw - raw.mean()) / (raw.std() + self.eps)

    def after_update(self, info) -> dict:
        """Forgetting rates from this step's policy change, then the Beta update."""
        rows, r = self._pending
        first = [k * info.group_size for k in range(len(info.row_ids))]
        current = info.rollout.select(first)
        if self.rho == "kl":
            D = self._shift(info, current)
            rho = torch.clamp(torch.pow(2.0, -D / self.d_half), self.rho_min, self.rho_max)
        else:
            D = torch.zeros(len(first))
            rho = torch.full((len(first),), self.rho_value)
        rho, D = info.gather(rho).double(), info.gather(D)
        hits = r.clamp(0.0, 1.0).double().sum(1)
        G = r.shape[1]
        for k, i in enumerate(rows):
            self.alpha[i] = rho[k].item() * self.alpha.get(i, 0.5) + hits[k].item()
            self.beta[i] = rho[k].item() * self.beta.get(i, 0.5) + G - hits[k].item()
        self._pending = None
        return {"spo/rho": rho.mean().item(), "spo/D": D.mean().item(),
                "spo/p_hat": self.p_hat(rows).mean().item()}

    def _shift(self, info, current) -> torch.Tensor:
        """D per prompt of this rank; stores this visit's response and log-probs for the next."""
        device = current.completion_ids_NT.device
        now_NT = info.logprobs(current).cpu()
        D = torch.zeros(len(info.row_ids))
        seen = [k for k, i in enumerate(info.row_ids) if i in self.stored]
        if seen:
            kept = [self.stored[info.row_ids[k]] for k in seen]
            then = stack([rollout for rollout, _ in kept], info.pad_id)
            lp_now = info.logprobs(then.to(device)).cpu()
            lp_then = torch.cat([pad_to(lp.unsqueeze(0), lp_now.shape[1], 0, left=False) for _, lp in kept])
            mask = then.loss_mask().float()
            D[seen] = ((lp_then - lp_now).abs() * mask).sum(1) / mask.sum(1).clamp(min=1)
        cpu = current.to("cpu")
        for k, i in enumerate(info.row_ids):
            self.stored[i] = (cpu.select([k]), now_NT[k])
        return D

    def state_dict(self) -> dict:
        return {"alpha": dict(self.alpha), "beta": dict(self.beta), "stored": dict(self.stored),
                "initialized": self.initialized}

    def load_state_dict(self, state: dict) -> None:
        self.alpha, self.beta = dict(state["alpha"]), dict(state["beta"])
        self.stored, self.initialized = dict(state["stored"]), state["initialized"]


@register("advantage", "riskpo")
class RiskPO:
    """RiskPO, mixed value-at-risk with question bundling (arXiv 2510.00911 [id unverified];
    RTkenny/RiskPO `core_algos.py::compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking`).

    Consecutive prompts form bundles of `bundle_size`; "paper" j of a bundle is the j-th
    completion of each of its questions, scored X_j = sum_q r_qj. With quantiles q_d, q_u at
    levels a_d, a_u:

        A_RVaR = [(X - q_d)+ - (X - q_u)+ + q_d - q_u] / (a_u - a_d + eps)
        A_CVaR = -(q_d - X)+ / (a_d + eps)
        A = (w_mix A_CVaR + A_RVaR) / (w_mix + 1) / (std_bundle(X) + eps)

    (unbiased std; one paper: std 1; w_mix = 0 gives pure RVaR; a bundle whose papers all
    score the same gets A = 0, where the reference's std + 1e-6 would blow up). Every completion of a paper
    gets A (`credit: uniform`), A / std of its question's rewards (`std`, an std below 1e-3
    counts as 1) or A x 0.5 if r > 0 else x 1.5 (`score`). All advantages are <= 0: only their
    differences matter. `quantiles: batch` takes each bundle's torch.quantile; `track` keeps 19
    quantiles (levels 0.05..0.95) over all paper scores, set from the first batch and then moved
    by SGD on the pinball loss, q_a <- q_a + lr_q (a - mean[X < q_a]), and reads the levels
    nearest a_d, a_u; `mix` averages the two. The tracked values of earlier steps serve a step,
    which then updates them (ordering [recon]); the first step uses batch quantiles."""

    LEVELS = torch.arange(1, 20, dtype=torch.float32) * 0.05

    def __init__(self, bundle_size: int = 5, alpha_down: float = 0.2, alpha_up: float = 0.9, w_mix: float = 1.5,
                 quantiles: Literal["track", "batch", "mix"] = "track", lr_q: float = 0.1,
                 credit: Literal["uniform", "std", "score"] = "uniform", eps: float = 1e-6):
        if not 0 < alpha_down < alpha_up < 1 or bundle_size < 1:
            raise ValueError("need 0 < alpha_down < alpha_up < 1 and bundle_size >= 1")
        self.bundle_size, self.a_d, self.a_u, self.w_mix = bundle_size, alpha_down, alpha_up, w_mix
        self.mode, self.lr_q, self.credit, self.eps = quantiles, lr_q, credit, eps
        self.q: torch.Tensor | None = None

    def _tracked(self) -> tuple[float, float] | None:
        if self.q is None:
            return None
        near = lambda a: int((self.LEVELS - a).abs().argmin())  # noqa: E731
        return self.q[near(self.a_d)].item(), self.q[near(self.a_u)].item()

    def _paper_advantage(self, X: torch.Tensor, q_d: float, q_u: float) -> torch.Tensor:
        rvar = ((X - q_d).clamp(min=0) - (X - q_u).clamp(min=0) + q_d - q_u) / (self.a_u - self.a_d + self.eps)
        cvar = -(q_d - X).clamp(min=0) / (self.a_d + self.eps)
        if X.numel() > 1 and bool((X == X[0]).all()):
            # every paper scored the same: no relative signal. The reference divides by
            # std + 1e-6 = 1e-6 here, which with tracked quantiles gives advantages near -1e6.
            return torch.zeros_like(X)
        std = X.std() if X.numel() > 1 else torch.tensor(1.0)
        return (self.w_mix * cvar + rvar) / (self.w_mix + 1) / (std + self.eps)

    def __call__(self, rewards_BG: torch.Tensor) -> torch.Tensor:
        r = rewards_BG.float()
        B, G = r.shape
        tracked = self._tracked()
        adv = torch.zeros_like(r)
        papers = []
        for s in range(0, B, self.bundle_size):
            X = r[s:s + self.bundle_size].sum(0)  # [G] paper scores
            papers.append(X)
            batch_q = ((torch.quantile(X, self.a_d).item(), torch.quantile(X, self.a_u).item())
                       if G > 1 else (X[0].item(), X[0].item()))
            if tracked is None or self.mode == "batch":
                q_d, q_u = batch_q
            elif self.mode == "track":
                q_d, q_u = tracked
            else:
                q_d, q_u = (tracked[0] + batch_q[0]) / 2, (tracked[1] + batch_q[1]) / 2
            A = self._paper_advantage(X, q_d, q_u)
            adv[s:s + self.bundle_size] = A * self._credit(r[s:s + self.bundle_size])
        self._update(torch.cat(papers))
        return adv

    def _credit(self, r_QG: torch.Tensor) -> torch.Tensor:
        if self.credit == "std":
            std = r_QG.std(dim=1, keepdim=True) if r_QG.shape[1] > 1 else torch.ones_like(r_QG[:, :1])
            return 1 / (torch.where(std > 1e-3, std, torch.ones_like(std)) + self.eps)
        if self.credit == "score":
            return torch.where(r_QG > 0, 0.5, 1.5)
        return torch.ones_like(r_QG)

    def _update(self, X: torch.Tensor) -> None:
        if self.q is None:
            self.q = torch.quantile(X, self.LEVELS)
        else:
            below = (X.unsqueeze(0) < self.q.unsqueeze(1)).float().mean(1)
            self.q = self.q + self.lr_q * (self.LEVELS - below)

    def state_dict(self) -> dict:
        return {"q": None if self.q is None else self.q.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.q = None if state["q"] is None else state["q"].clone()
