"""`arith`: small additions with a digit-by-digit scratchpad, the tiny world's default task.

    prompt: "47+38="
    gold:   "<think>7+8=15;4+3+1=8</think><answer>85</answer>"

Train and test are disjoint: all (a, b) pairs are shuffled once with the task seed and the
test split takes the first `test_size` of them; train draws from the rest.

`preamble_frac`: that share of rows (seeded) has a gold thought that starts with a useless
`preamble` ("<think>hmm, let me see.7+8=15;..."), tokens that a thinking budget pays for and
that help no answer (the AnytimeReasoner tiny analogue, recipes/brpo.yaml).
"""
from __future__ import annotations

import random

from ..registry import register
from .base import Task, disjoint_split


@register("task", "arith")
class Arith(Task):
    name = "arith"

    def __init__(self, max_operand: int = 99, think: bool = True, seed: int = 1234, hints: bool = False,
                 trivial_frac: float = 0.0, preamble_frac: float = 0.0, preamble: str = "hmm, let me see."):
        if not 0.0 <= preamble_frac <= 1.0:
            raise ValueError("preamble_frac must be in [0, 1]")
        self.preamble_frac, self.preamble = preamble_frac, preamble
        if max_operand < 1:
            raise ValueError("max_operand must be >= 1")
        if not 0.0 <= trivial_frac < 1.0:
            raise ValueError("trivial_frac must be in [0, 1)")
        self.max_operand, self.think, self.seed, self.hints = max_operand, think, seed, hints
        self.trivial_frac = trivial_frac

    def _pairs(self) -> list[tuple[int, int]]:
        pairs = [(a, b) for a in range(self.max_operand + 1) for b in range(self.max_operand + 1)]
        random.Random(self.seed).shuffle(pairs)
        return pairs

    def _split(self, test_size: int, seed: int, n: int, split: str) -> list[tuple[int, int]]:
        """Disjoint splits: up to 250k pairs, one seeded shuffle of them all; above, seeded draws
        with the test pairs excluded from train."""
        space = (self.max_operand + 1) ** 2
        if test_size >= space:
            raise ValueError(f"test_size {test_size} leaves no training problems "
                             f"(max_operand {self.max_operand} gives {space})")
        keep = (lambda pair: min(pair) > 0) if self.trivial_frac else (lambda pair: True)  # noqa: E731
        if space <= 250_000:
            return disjoint_split([pair for pair in self._pairs() if keep(pair)], test_size, split, n, seed)
        draw = lambda r: (r.randint(0, self.max_operand), r.randint(0, self.max_operand))  # noqa: E731
        rng, test = random.Random(self.seed), {}
        while len(test) < test_size:
            pair = draw(rng)
            if keep(pair):
                test.setdefault(pair, None)
        if split == "test":
            return list(test)[:n]
        rng, out = random.Random(seed), []
        while len(out) < n:
            pair = draw(rng)
            if pair not in test and keep(pair):
                out.append(pair)
        return out

    def _trivial(self, split: str, n: int, seed: int, n_test: int) -> list[tuple[int, int]]:
        """Pairs with a zero operand ("47+0", "0+47"), split disjointly like the others."""
        pairs = [(a, 0) for a in range(self.max_operand + 1)] + [(0, b) for b in range(1, self.max_operand + 1)]
        random.Random(self.seed + 1).shuffle(pairs)
        if n_test >= len(pairs):
            raise ValueError(f"{n_test} trivial test problems leave none to train on; lower trivial_frac")
        return disjoint_split(pairs, n_test, split, n, seed + 1)

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        """Rows of `split`; with `trivial_frac`, that share are zero-operand sums (TON's mix of
        trivial and multi-step items). Every row has `difficulty`: trivial (an operand is 0) or hard."""
        n_trivial = round(n * self.trivial_frac)
        pairs = self._split(test_size, seed, n - n_trivial, split)
        if n_trivial:
            pairs += self._trivial(split, n_trivial, seed, round(test_size * self.trivial_frac))
            random.Random(seed).shuffle(pairs)
        rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b), "a": a, "b": b,
                 "difficulty": "trivial" if min(a, b) == 0 else "hard"} for a, b in pairs]
        if self.hints:
            for row in rows:
                row.update(self.hint_parts(row["a"], row["b"]))
        if self.preamble_frac:
            rng = random.Random(seed + 7)
            for row in rows:
                row["preamble"] = rng.random() < self.preamble_frac
        return rows

    @staticmethod
    def steps(a: int, b: int) -> list[str]:
        """The digit-by-digit scratchpad: "7+8=15", "4+3+1=8" (carry shown when there is one)."""
        steps, carry = [], 0
        while True:
            da, db = a % 10, b % 10
            total = da + db + carry
            steps.append(f"{da}+{db}+{carry}={total}" if carry else f"{da}+{db}={total}")
            carry, a, b = total // 10, a // 10, b // 10
            if not (a or b or carry):
                return steps

    @classmethod
    def hint_parts(cls, a: int, b: int) -> dict:
        """Scaf-GRPO hint fields (arXiv 2510.19807 dataset layout), up to four parts per tier.
        Knowledge and planning parts are prose; the solution parts are scratchpad fragments
        ("<think>4+4=8", ";6+9=15", ...), so joined with "" after the question they read as a
        partly written scratchpad that even the tiny character model can continue."""
        steps = cls.steps(a, b)
        return {"knowledge_components_parts": ["add digits right to left", "a column over 9 carries 1",
                                               "add the carry to the next column", "read the sum left to right"],
                "planning_skeleton_parts": ["units first", "then tens", "then hundreds", "then the last carry"],
                "solution_breakdown_parts": ["<think>" + steps[0]] + [";" + s for s in steps[1:4]]}

    def gold(self, row: dict) -> str:
        a, b = int(row["a"]), int(row["b"])
        answer = f"<answer>{a + b}</answer>"
        if not self.think:
            return answer
        lead = self.preamble if row.get("preamble") else ""
        return f"<think>{lead}{';'.join(self.steps(a, b))}</think>{answer}"
