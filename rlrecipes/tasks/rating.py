"""`rating`: the text analogue of Aes-R1's aesthetic scoring (arXiv 2509.21871, named.md §1).

Each item is a digit string with a hidden quality in [0, 1], the digit sum over its maximum,
rounded to two decimals; the model reasons, then gives a score:

    prompt: "rate 3849:"
    gold:   "<think>3+8+4+9=24</think><answer>0.67</answer>"

Eval reports, next to pass@k (a score within `tolerance` of the label counts as correct), the
Pearson (PLCC) and Spearman (SRCC) correlations between each item's mean predicted score and
its label, as image-quality papers do. Real data: rows with `prompt` and a numeric `answer`.
"""
from __future__ import annotations

import math
import random

from ..registry import register
from .base import ANSWER_RE, NUMBER_RE, Task, disjoint_split


def parse_score(completion: str) -> float | None:
    """The RAPO parser (AesR1 `rapo.py`): the last <answer>...</answer> (or the whole text when
    there is none), then its first number; None when there is no number."""
    found = ANSWER_RE.findall(completion)
    m = NUMBER_RE.search(found[-1] if found else completion)
    return float(m.group(0)) if m else None


@register("task", "rating")
class Rating(Task):
    name = "rating"
    regression = True

    def __init__(self, digits: int = 4, tolerance: float = 0.1, seed: int = 1234):
        if not 1 <= digits <= 6:
            raise ValueError("digits must be between 1 and 6")
        self.digits, self.tolerance, self.seed = digits, tolerance, seed

    def quality(self, item: str) -> float:
        return round(sum(int(c) for c in item) / (9 * len(item)), 2)

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        items = [str(i).zfill(self.digits) for i in range(10 ** self.digits)]
        random.Random(self.seed).shuffle(items)
        if test_size >= len(items):
            raise ValueError(f"test_size {test_size} leaves no training items ({len(items)} in all)")
        return [{"prompt": f"rate {item}:", "answer": f"{self.quality(item):.2f}", "item": item}
                for item in disjoint_split(items, test_size, split, n, seed)]

    def gold(self, row: dict) -> str:
        if "item" not in row:
            return super().gold(row)
        item = row["item"]
        return f"<think>{'+'.join(item)}={sum(int(c) for c in item)}</think><answer>{row['answer']}</answer>"

    def extract(self, completion: str) -> str | None:
        score = parse_score(completion)
        return None if score is None else f"{score:g}"

    def check(self, answer: str | None, row: dict) -> float:
        if answer is None:
            return 0.0
        return float(abs(float(answer) - float(row["answer"])) <= self.tolerance + 1e-9)

    def label(self, row: dict) -> float:
        return float(row["answer"])

    def predicted(self, answers: list[str | None]) -> float:
        """An item's predicted score: the mean of its parseable samples (NaN when none parse)."""
        scores = [float(a) for a in answers if a is not None]
        return sum(scores) / len(scores) if scores else math.nan
