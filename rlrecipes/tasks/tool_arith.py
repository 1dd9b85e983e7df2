"""`tool_arith`: sums whose first operand is sometimes a named quantity only a lookup tool knows
(OTC-PO's offline analogue, named.md §2).

    hard: "k+7="  gold "<search>k</search><information>13</information><answer>20</answer>"
    easy: "3+7="  gold "<answer>10</answer>", or, for an `overcall` share of the SFT rows, with a
          useless call first: "<search>3</search><information>3</information><answer>10</answer>"

The knowledge base maps each name to a value and each number to itself, so calls on easy items
are harmless but wasted: an SFT warm start on these golds over-calls, which OTC should undo.
"""
from __future__ import annotations

import random
import string

from ..registry import register
from .base import Task, disjoint_split


@register("task", "tool_arith")
class ToolArith(Task):
    name = "tool_arith"

    def __init__(self, names: int = 26, max_value: int = 20, hard_frac: float = 0.5, overcall: float = 0.8,
                 seed: int = 1234):
        if not 1 <= names <= 26 or max_value < 1 or not 0 <= hard_frac <= 1 or not 0 <= overcall <= 1:
            raise ValueError("need 1 <= names <= 26, max_value >= 1, hard_frac and overcall in [0, 1]")
        self.max_value, self.hard_frac, self.overcall, self.seed = max_value, hard_frac, overcall, seed
        rng = random.Random(seed)
        self.values = {name: rng.randint(0, max_value) for name in string.ascii_lowercase[:names]}

    def knowledge(self) -> dict[str, int]:
        return {**self.values, **{str(i): i for i in range(self.max_value + 1)}}

    def _items(self, kind: str) -> list[tuple[str, int]]:
        firsts = list(self.values) if kind == "hard" else [str(i) for i in range(self.max_value + 1)]
        items = [(x, y) for x in firsts for y in range(self.max_value + 1)]
        random.Random(self.seed + (kind == "hard")).shuffle(items)
        return items

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        n_hard, t_hard = round(n * self.hard_frac), round(test_size * self.hard_frac)
        rows = []
        for kind, k, k_test in (("hard", n_hard, t_hard), ("easy", n - n_hard, test_size - t_hard)):
            items = self._items(kind)
            if k_test >= len(items):
                raise ValueError(f"test_size leaves no {kind} training items ({len(items)} in all)")
            for x, y in disjoint_split(items, k_test, split, k, seed):
                value = self.values[x] if kind == "hard" else int(x)
                rows.append({"prompt": f"{x}+{y}=", "answer": str(value + y), "key": x, "difficulty": kind})
        rng = random.Random(seed + 7)
        rng.shuffle(rows)
        for row in rows:  # which easy SFT golds make a wasted call (fixed per row)
            row["sft_call"] = row["difficulty"] == "hard" or rng.random() < self.overcall
        return rows

    def gold(self, row: dict) -> str:
        if "key" not in row:
            return super().gold(row)
        answer = f"<answer>{row['answer']}</answer>"
        if not row.get("sft_call"):
            return answer
        key = row["key"]
        return f"<search>{key}</search><information>{self.knowledge()[key]}</information>{answer}"
