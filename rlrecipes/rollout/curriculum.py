"""CRAFT-GUI difficulty curriculum (Nong et al., arXiv 2508.11360, abstract: "a curriculum learning
framework based on GRPO that explicitly accounts for the varying difficulty across
trajectories"; the rule below is the reconstruction of algorithms_b.md §17 [recon]).

- Difficulty of a training prompt: d = 1 - pass rate. At the first step's `refine` every prompt
  of a pool (`pool_size`, default all) is sampled `rollout_n` times to set its d under the
  initial policy; afterwards each visit updates it as an EMA, d <- alpha (1 - pass@G) +
  (1 - alpha) d (alpha = 0.5). A completion passes when its weighted total reward is at least
  `success` (1.0: the whole call right under CRAFT-GUI's 0.5 type + 0.5 param).
- Stage k (k = 0, 1, ...) admits the scored prompts with d <= the `quantiles[k]` quantile of the
  scored prompts' d (q = [0.3, 0.6, 1.0]: the easiest 30 %, then 60 %, then all), recomputed
  from the current difficulties at every draw; a stage at quantile 1 admits every prompt, so
  with `pool_size` below the data size the unscored prompts join in the last stage. A step's prompts are drawn uniformly from the
  admitted ones without repeats within the step (with repeats only when fewer are admitted).
  The first step, before any scoring, draws uniformly from all prompts.
- The stage advances when the mean pass rate of the last `window` training batches of the
  stage is >= `advance_acc` (0.7), or after `max_stage_steps` steps in it; the last stage stays.

State (difficulties, stage, steps in stage, recent accuracies, generator) is checkpointed.
Several processes: each rank updates the difficulties from its own share of the groups, so
their estimates (and draws) may drift apart; the step still runs the same number of prompts.
"""
from __future__ import annotations

import torch

from ..registry import register
from .samplers import Batch, Uniform


@register("sampler", "difficulty_curriculum")
class DifficultyCurriculum(Uniform):
    """CRAFT-GUI's staged easy-to-hard curriculum over per-prompt difficulty EMAs (module doc)."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True, quantiles: list[float] = (0.3, 0.6, 1.0),
                 alpha: float = 0.5, advance_acc: float = 0.7, window: int = 5, max_stage_steps: int = 200,
                 rollout_n: int = 8, pool_size: int | None = None, success: float = 1.0):
        super().__init__(num_rows, seed, shuffle)
        quantiles = list(quantiles)
        if not quantiles or any(not 0.0 < q <= 1.0 for q in quantiles) or quantiles != sorted(quantiles):
            raise ValueError("quantiles must be increasing values in (0, 1]")
        if not 0.0 < alpha <= 1.0 or window < 1 or max_stage_steps < 1 or rollout_n < 1:
            raise ValueError("need 0 < alpha <= 1, window >= 1, max_stage_steps >= 1, rollout_n >= 1")
        self.quantiles, self.alpha, self.advance_acc, self.window = quantiles, alpha, advance_acc, window
        self.max_stage_steps, self.rollout_n, self.success = max_stage_steps, rollout_n, success
        self.pool_size = min(pool_size or num_rows, num_rows)
        self.difficulty = torch.full((num_rows,), float("nan"))   # NaN: not scored yet
        self.stage, self.stage_steps, self.recent = 0, 0, []
        self.gen = torch.Generator().manual_seed(seed + 29)
        self._index: dict[int, int] | None = None

    def admitted(self) -> list[int]:
        """Rows the current stage admits: scored, with d <= the stage's quantile of scored d; a
        stage at quantile 1 admits every row, scored or not (with a pool smaller than the data,
        the rows never scored join there)."""
        if self.quantiles[self.stage] >= 1.0 and not torch.isnan(self.difficulty).all():
            return list(range(self.num_rows))
        known = (~torch.isnan(self.difficulty)).nonzero().flatten()
        if known.numel() == 0:
            return []
        d = self.difficulty[known]
        cut = torch.quantile(d, self.quantiles[self.stage]).item()
        return known[d <= cut + 1e-9].tolist()

    def next(self, n: int) -> list[int]:
        pool = self.admitted()
        if not pool:
            return super().next(n)
        picks = torch.randperm(len(pool), generator=self.gen)[:n].tolist() if len(pool) >= n else \
            torch.randint(len(pool), (n,), generator=self.gen).tolist()
        return [pool[i] for i in picks]

    def _passed(self, batch: Batch, rewards_NK: torch.Tensor) -> torch.Tensor:
        from ..rewards.combine import combine
        return (combine(rewards_NK, batch.weights) >= self.success - 1e-6).float()

    def refine(self, batch: Batch) -> None:
        G, m = batch.group_size, batch.metrics
        if torch.isnan(self.difficulty).all():   # the first step: difficulties under the initial policy
            from .samplers import score_pool
            pool = torch.randperm(self.num_rows, generator=self.gen)[:self.pool_size].tolist()
            rate = score_pool(batch, pool, self.rollout_n, self.success - 1e-6).float().mean(1)
            self.difficulty[torch.tensor(pool)] = 1 - rate
        if self._index is None:
            self._index = {id(row): i for i, row in enumerate(batch.train_rows)}
        pass_BG = self._passed(batch, batch.rewards_NK).view(-1, G)
        for g in range(pass_BG.shape[0]):
            i = self._index.get(id(batch.rows[g * G]))
            if i is not None:
                old = self.difficulty[i]
                new = 1 - pass_BG[g].mean()
                self.difficulty[i] = new if torch.isnan(old) else self.alpha * new + (1 - self.alpha) * old
        self._advance(pass_BG.mean().item())
        m["curriculum/stage"] = float(self.stage)
        m["curriculum/admitted_frac"] = len(self.admitted()) / self.num_rows
        m["curriculum/difficulty_mean"] = self.difficulty.nanmean().item()

    def _advance(self, batch_acc: float) -> None:
        self.recent = (self.recent + [batch_acc])[-self.window:]
        self.stage_steps += 1
        if self.stage == len(self.quantiles) - 1:
            return
        ready = len(self.recent) == self.window and sum(self.recent) / self.window >= self.advance_acc
        if ready or self.stage_steps >= self.max_stage_steps:
            self.stage, self.stage_steps, self.recent = self.stage + 1, 0, []

    def state_dict(self) -> dict:
        return {**super().state_dict(), "difficulty": self.difficulty.clone(), "stage": self.stage,
                "stage_steps": self.stage_steps, "recent": list(self.recent), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.difficulty = state["difficulty"].clone()
        self.stage, self.stage_steps, self.recent = state["stage"], state["stage_steps"], list(state["recent"])
        self.gen.set_state(state["gen"])
