"""Prompt samplers: which training rows each step uses. Stateful: `state_dict`/`load_state_dict`.

A sampler is a class registered as `sampler`; the loop builds it with `num_rows` and `seed` plus
the YAML parameters and calls `next(n)` for the row indices of a step. A sampler with a
`refine(batch: Batch)` method also sees each step's scored batch (this rank's share) before the
advantages and may replace rollouts and rewards in it (Scaf-GRPO's hints, rollout/scaffold.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..registry import register
from .generate import Rollout


@dataclass
class Batch:
    """What a refining sampler sees of one RL step (this rank's share) and may change in place."""
    step: int
    group_size: int
    rows: list[dict]              # one per completion (G consecutive per prompt)
    questions: list[str]          # the raw question of each completion's prompt
    rollout: Rollout
    rewards_NK: torch.Tensor      # per reward function, NaN where it returned None
    weights: list[float]
    generate: Callable            # formatted prompts -> Rollout, one completion each
    score: Callable               # (prompts, texts, rows) -> rewards_NK
    format: Callable              # raw questions -> formatted prompts
    pad_id: int
    metrics: dict = field(default_factory=dict)


@register("sampler", "uniform")
class Uniform:
    """Epochs over the training rows in a seeded random order (without replacement within an
    epoch), like a shuffled DataLoader. `shuffle: false` keeps the file order."""

    def __init__(self, num_rows: int, seed: int, shuffle: bool = True):
        self.num_rows, self.seed, self.shuffle = num_rows, seed, shuffle
        self.epoch, self.pos = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_rows))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_rows, generator=g).tolist()

    def next(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos == self.num_rows:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._make_order()
            take = min(n - len(out), self.num_rows - self.pos)
            out += self._order[self.pos:self.pos + take]
            self.pos += take
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._make_order()
