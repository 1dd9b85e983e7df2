"""`arith`: small additions with a digit-by-digit scratchpad, the tiny world's default task.

    prompt: "47+38="
    gold:   "<think>7+8=15;4+3+1=8</think><answer>85</answer>"

Train and test are disjoint: all (a, b) pairs are shuffled once with the task seed and the
test split takes the first `test_size` of them; train draws from the rest.
"""
from __future__ import annotations

import random

from ..registry import register
from .base import Task


@register("task", "arith")
class Arith(Task):
    name = "arith"

    def __init__(self, max_operand: int = 99, think: bool = True, seed: int = 1234):
        if max_operand < 1:
            raise ValueError("max_operand must be >= 1")
        self.max_operand, self.think, self.seed = max_operand, think, seed

    def _pairs(self) -> list[tuple[int, int]]:
        pairs = [(a, b) for a in range(self.max_operand + 1) for b in range(self.max_operand + 1)]
        random.Random(self.seed).shuffle(pairs)
        return pairs

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        pairs = self._pairs()
        if test_size >= len(pairs):
            raise ValueError(f"test_size {test_size} leaves no training problems "
                             f"(max_operand {self.max_operand} gives {len(pairs)})")
        test, train = pairs[:test_size], pairs[test_size:]
        if split == "test":
            chosen = test[:n]
        else:
            rng = random.Random(seed)
            chosen = [train[rng.randrange(len(train))] for _ in range(n)]
        return [{"prompt": f"{a}+{b}=", "answer": str(a + b), "a": a, "b": b} for a, b in chosen]

    def gold(self, row: dict) -> str:
        a, b = int(row["a"]), int(row["b"])
        answer = f"<answer>{a + b}</answer>"
        if not self.think:
            return answer
        steps, carry = [], 0
        while a or b or carry or not steps:
            da, db = a % 10, b % 10
            total = da + db + carry
            steps.append(f"{da}+{db}+{carry}={total}" if carry else f"{da}+{db}={total}")
            carry, a, b = total // 10, a // 10, b // 10
            if not (a or b or carry):
                break
        return f"<think>{';'.join(steps)}</think>{answer}"
