"""`mcq_arith`: multiple-choice sums, the offline stand-in for MedQA in Clinical-R1 (arXiv 2512.00601).

    prompt: "47+38=? 84:A 87:B 85:C 83:D"
    gold:   "<think>7+8=15;4+3+1=8;85:C</think><answer>85 \\boxed{C}</answer>"

The gold follows the authors' prompt (thinking, then an answer that summarises and boxes the
letter), so it earns the full format reward 1.5. Each option is written value first (`85:C`) and
the wrong ones are near misses (the sum -3..+3), so no two options end in the same digit: the
thought's last step `85:C` is a copy of the matching option, which a two-layer model can learn
(an induction pattern); with the letter first (`C)85`) and slips of ±10 the tiny model stayed at
chance after SFT and RL (0.263 at the start, measured). Each item's options and the gold
letter's position come from a generator seeded by the task seed and the item, so an item reads
the same in every split. Train and test are disjoint as in `arith`
(the same pair shuffle). Eval: a sample is correct when `crpo_accuracy` gives it 1, i.e. it has
exactly one `\\boxed{}` and that holds the gold letter.
Real data: rows with `prompt`, `answer` (the letter) and, for the faithfulness and
comprehensiveness terms, `options` (the option texts, A first).
"""
from __future__ import annotations

import random

from ..registry import register
from ..rewards.clinical import accuracy_score, chosen_letter, clean
from .arith import Arith


@register("task", "mcq_arith")
class MCQArith(Arith):
    name = "mcq_arith"

    def __init__(self, max_operand: int = 99, options: int = 4, seed: int = 1234):
        if not 2 <= options <= 6:
            raise ValueError("options must be between 2 and 6")
        super().__init__(max_operand=max_operand, seed=seed)
        self.n_options = options

    def choices(self, a: int, b: int) -> tuple[list[int], int]:
        """(the option values in order, the index of the right one), fixed per item."""
        total = a + b
        slips = [total + d for d in (-3, -2, -1, 1, 2, 3)]
        rng = random.Random(f"{self.seed}:{a}+{b}")
        wrong = list(dict.fromkeys(s for s in slips if s >= 0 and s != total))
        rng.shuffle(wrong)
        values = wrong[:self.n_options - 1]
        right = rng.randrange(len(values) + 1)
        values.insert(right, total)
        return values, right

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        rows = super().synthetic(split, n, seed, test_size)
        for row in rows:
            values, right = self.choices(row["a"], row["b"])
            listing = " ".join(f"{v}:{chr(65 + i)}" for i, v in enumerate(values))
            row.update(prompt=f"{row['a']}+{row['b']}=? {listing}", answer=chr(65 + right),
                       options=[str(v) for v in values], total=str(row["a"] + row["b"]))
        return rows

    def gold(self, row: dict) -> str:
        if "a" not in row:
            return super(Arith, self).gold(row)
        a, b = int(row["a"]), int(row["b"])
        return (f"<think>{';'.join(self.steps(a, b))};{a + b}:{row['answer']}</think>"
                f"<answer>{a + b} \\boxed{{{row['answer']}}}</answer>")

    def extract(self, completion: str) -> str | None:
        return chosen_letter(clean(completion))

    def check(self, answer: str | None, row: dict) -> float:
        return float(answer is not None and answer == str(row["answer"]).strip())

    def score(self, completion: str, row: dict) -> float:
        return float(accuracy_score(clean(completion), row["answer"]) == 1.0)
