"""`cover`: place k sensors on a line to cover targets, the tiny world's submodular task (SubRL,
arXiv 2307.13372: coverage control with diminishing returns, as a text task).

    prompt: "1,4,5,12,13,17>"
    gold:   "<answer>3,12,17</answer>"

Targets are 4-7 distinct cells of 0..length-1; a sensor at p covers the cells p-radius..p+radius.
The objective F(S) = the number of targets some sensor of S covers is monotone submodular: a
sensor's marginal gain F(S + p) - F(S) shrinks as S grows (a second sensor on the same targets
gains 0). The answer lists `k` sensors in order; later ones (or anything past the k-th) add
nothing. The gold is the greedy placement (each sensor takes the largest gain, smallest p on
ties), which is within 1 - 1/e of the optimum (Nemhauser et al. 1978); `noisy_gold_frac` of the
golds have one sensor moved to a random cell, so the SFT start is imperfect and RL has room.

Eval: pass@1 is "covers as many targets as the best placement" (found by enumeration), and the
task metric `coverage` is F(S) / F(best).
"""
from __future__ import annotations

import functools
import itertools
import operator
import random
import re

from ..registry import register
from .base import Task, extract_answer

SENSORS = re.compile(r"\d+")


def covered(targets: list[int], sensor: int, radius: int) -> set[int]:
    return {t for t in targets if abs(t - sensor) <= radius}


def gains(targets: list[int], sensors: list[int], radius: int, k: int) -> list[int]:
    """Marginal gain F(S_{i}) - F(S_{i-1}) of each listed sensor (0 past the k-th)."""
    seen, out = set(), []
    for i, p in enumerate(sensors):
        new = covered(targets, p, radius) - seen if i < k else set()
        seen |= new
        out.append(len(new))
    return out


def parse_sensors(answer: str | None) -> list[tuple[int, int]] | None:
    """(sensor, end offset in the answer text) of each number in an answer, None without one."""
    if answer is None:
        return None
    return [(int(m.group()), m.end()) for m in SENSORS.finditer(answer)]


@register("task", "cover")
class Cover(Task):
    name = "cover"
    metrics = ("coverage",)

    def __init__(self, length: int = 20, k: int = 3, radius: int = 2, min_targets: int = 4, max_targets: int = 7,
                 noisy_gold_frac: float = 0.4, seed: int = 1234):
        if not 1 <= k <= 5 or radius < 0 or not 1 <= min_targets <= max_targets <= length:
            raise ValueError("cover needs 1 <= k <= 5, radius >= 0 and 1 <= min_targets <= max_targets <= length")
        if not 0.0 <= noisy_gold_frac <= 1.0:
            raise ValueError(f"noisy_gold_frac must be in [0, 1], got {noisy_gold_frac}")
        self.length, self.k, self.radius, self.seed = length, k, radius, seed
        self.min_targets, self.max_targets, self.noisy_gold_frac = min_targets, max_targets, noisy_gold_frac

    def best(self, targets: list[int]) -> int:
        """F of the best placement of k sensors (enumerated over the cells, as bit masks)."""
        masks = {sum(1 << i for i, t in enumerate(targets) if abs(t - p) <= self.radius) for p in range(self.length)}
        return max(bin(functools.reduce(operator.or_, c, 0)).count("1")
                   for c in itertools.combinations(sorted(masks), min(self.k, len(masks))))

    def greedy(self, targets: list[int]) -> list[int]:
        placed, seen = [], set()
        for _ in range(self.k):
            p = max(range(self.length), key=lambda q: (len(covered(targets, q, self.radius) - seen), -q))
            placed.append(p)
            seen |= covered(targets, p, self.radius)
        return placed

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        """Distinct target sets from one seeded stream: test takes the first `test_size`, train
        the next n (disjoint)."""
        rng, items, seen = random.Random(f"cover-{self.seed}"), [], set()
        need = test_size + (n if split == "train" else 0)
        while len(items) < need:
            targets = tuple(sorted(rng.sample(range(self.length), rng.randint(self.min_targets, self.max_targets))))
            if targets not in seen:
                seen.add(targets)
                items.append(targets)
        chosen = items[:min(n, test_size)] if split == "test" else items[test_size:test_size + n]
        noise = random.Random(f"cover-gold-{split}-{seed}")
        rows = []
        for targets in chosen:
            placed = self.greedy(list(targets))
            if noise.random() < self.noisy_gold_frac:
                placed[noise.randrange(self.k)] = noise.randrange(self.length)
            rows.append({"prompt": ",".join(map(str, targets)) + ">", "answer": str(self.best(list(targets))),
                         "targets": list(targets), "gold_sensors": placed, "k": self.k, "radius": self.radius})
        return rows

    def gold(self, row: dict) -> str:
        return "<answer>" + ",".join(map(str, row["gold_sensors"])) + "</answer>"

    def value(self, completion: str, row: dict) -> int:
        return self._value(self.extract(completion), row)

    def _value(self, answer: str | None, row: dict) -> int:
        parsed = parse_sensors(answer)
        return sum(gains(row["targets"], [p for p, _ in parsed], self.radius, self.k)) if parsed else 0

    def extract(self, completion: str) -> str | None:
        """The placement: the first k sensors, sorted (votes agree on placements)."""
        parsed = parse_sensors(extract_answer(completion))
        return None if parsed is None else ",".join(map(str, sorted(p for p, _ in parsed[:self.k])))

    def check(self, answer: str | None, row: dict) -> float:
        """1 when the placement covers as many targets as the best one."""
        return float(answer is not None and self._value(answer, row) == int(row["answer"]))

    def sample_metrics(self, completion: str, row: dict) -> dict[str, float]:
        return {"coverage": self.value(completion, row) / int(row["answer"])}
