"""Prompt samplers: which training rows each step uses. Stateful: `state_dict`/`load_state_dict`.

A sampler is a class registered as `sampler`; the loop builds it with `num_rows` and `seed` plus
the YAML parameters and calls `next(n)` for the row indices of a step.
"""
from __future__ import annotations

import torch

from ..registry import register


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
