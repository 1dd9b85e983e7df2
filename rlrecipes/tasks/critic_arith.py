"""`critic_arith`: judge a proposed sum, the text analogue of GUI-Critic-R1 (arXiv 2506.04614).

GUI-Critic-R1 judges an agent's proposed GUI action before it runs and suggests a better one.
Here the proposed "action" is a sum; the critic checks it and suggests the right sum:

    prompt: "47+38=75?"
    gold:   "<think>7+8=15;4+3+1=8</think><score>Incorrect</score><suggestion>85</suggestion>"

A `wrong_frac` share of items propose a typical slip (a dropped or extra carry ±10, off by one,
the digits swapped); the rest propose the right sum (label Correct, suggestion = the sum, as the
authors' "if correct, restate the action"). For a `lazy` share of the Incorrect items the SFT
gold suggests the proposed wrong number (a critic that flags errors but does not fix them), so
suggestion validity starts below verdict accuracy: what the suggestion reward should repair.
Each item's proposal and laziness are fixed by the task seed and the item; train and test are
disjoint as in `arith`.

Eval (as the authors' `statistic.py`, which parses the last <score>/<suggestion> wherever they
are): pass@1 = verdict and suggestion both right; task metrics `verdict_acc`,
`verdict_precision/recall/f1` (Correct is the positive class; no verdict counts as wrong),
`sv` (suggestion validity over all items, the paper's "suggestion score"), `sv_incorrect`
(over the Incorrect items), `format` (the strict layout).
Real data: rows with `prompt`, `label` (Correct / Incorrect) and `suggestion`.
"""
from __future__ import annotations

import random
import re

from ..registry import register
from ..rewards.critic import LAYOUT, parse_critique, same_suggestion
from .arith import Arith


@register("task", "critic_arith")
class CriticArith(Arith):
    name = "critic_arith"
    required_fields = ("prompt", "label", "suggestion")
    metrics = ("verdict_acc", "verdict_tp", "verdict_fp", "verdict_fn", "sv", "sv_incorrect", "format")

    def __init__(self, max_operand: int = 99, wrong_frac: float = 0.5, lazy: float = 0.5, seed: int = 1234):
        if not 0.0 < wrong_frac < 1.0:
            raise ValueError("wrong_frac must be in (0, 1): the critic needs both labels")
        if not 0.0 <= lazy <= 1.0:
            raise ValueError("lazy must be in [0, 1]")
        super().__init__(max_operand=max_operand, seed=seed)
        self.wrong_frac, self.lazy = wrong_frac, lazy

    def proposal(self, a: int, b: int) -> tuple[int, bool]:
        """(the proposed sum, whether the SFT gold lazily repeats it when wrong), fixed per item."""
        total, rng = a + b, random.Random(f"{self.seed}:{a}+{b}")
        wrong, lazy = rng.random() < self.wrong_frac, rng.random() < self.lazy
        if not wrong:
            return total, False
        carried = (a % 10) + (b % 10) >= 10
        slips = [total - 10 if carried else total + 10, total + 1, total - 1, int(str(total)[::-1])]
        slips = [s for s in slips if s >= 0 and s != total]
        return rng.choice(slips), lazy

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        rows = super().synthetic(split, n, seed, test_size)
        for row in rows:
            a, b = row["a"], row["b"]
            proposed, lazy = self.proposal(a, b)
            label = "Correct" if proposed == a + b else "Incorrect"
            row.update(prompt=f"{a}+{b}={proposed}?", answer=label, label=label, suggestion=str(a + b),
                       proposed=str(proposed), lazy=lazy)
        return rows

    def gold(self, row: dict) -> str:
        if "a" not in row:
            return super(Arith, self).gold(row)
        a, b = int(row["a"]), int(row["b"])
        suggestion = row["proposed"] if row.get("lazy") else row["suggestion"]
        return (f"<think>{';'.join(self.steps(a, b))}</think>"
                f"<score>{row['label']}</score><suggestion>{suggestion}</suggestion>")

    def extract(self, completion: str) -> str | None:
        verdict, suggestion = parse_critique(completion, strict=False)
        return None if verdict is None or suggestion is None else f"{verdict} {suggestion}"

    def check(self, answer: str | None, row: dict) -> float:
        if answer is None:
            return 0.0
        verdict, _, suggestion = answer.partition(" ")
        return float(verdict == row["label"] and same_suggestion(suggestion, row["suggestion"]))

    def score(self, completion: str, row: dict) -> float:
        return self.check(self.extract(completion), row)

    def sample_metrics(self, completion: str, row: dict) -> dict[str, float]:
        verdict, suggestion = parse_critique(completion, strict=False)
        label, positive = row["label"], verdict == "Correct"
        valid = float(same_suggestion(suggestion, row["suggestion"]))
        return {"verdict_acc": float(verdict == label),
                "verdict_tp": float(positive and label == "Correct"),
                "verdict_fp": float(positive and label != "Correct"),
                "verdict_fn": float(not positive and label == "Correct"),
                "sv": valid, "sv_incorrect": valid if label == "Incorrect" else float("nan"),
                "format": float(re.fullmatch(LAYOUT, completion.strip(), re.DOTALL) is not None)}
