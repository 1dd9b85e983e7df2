"""`arith_paraphrase`: `arith` sums asked in several phrasings (Info-consistent GRPO's analogue of
semantically equivalent prompts, arXiv 2512.12858; shared/papers/next/info_consistent_grpo.md §6).

    variants: ["47+38=", "38+47=", "add 47 and 38:", "what is 47 plus 38?"]
    gold:     "<think>7+8=15;4+3+1=8</think><answer>85</answer>"   (as `arith`, whatever the phrasing)

Every row carries `variants` (the K phrasings, raw) and `template` (the index its own `prompt`
uses). Training rows draw their prompt's template with `weights` (default 85% the first, 5% each
other), so an SFT warm-start sees the rarer phrasings seldom; test rows cycle through the
templates (row i uses i mod K), so pass@1 weighs every phrasing equally.

Eval (evaluate.py, for a task with `variants`): one sample per variant of every test problem;
`consistency@K` = share of problems whose K extracted answers are identical (and present),
`h_grp` = mean group instability of those answers, `acc_v<k>` = accuracy on template k.
"""
from __future__ import annotations

import random

from ..registry import register
from .arith import Arith

TEMPLATES = ("{a}+{b}=", "{b}+{a}=", "add {a} and {b}:", "what is {a} plus {b}?")


def variant_metrics(k: int) -> tuple[str, ...]:
    """The eval metric names of a task with k variants (evaluate.variant_values reports them)."""
    return (f"consistency@{k}", "h_grp", *[f"acc_v{i}" for i in range(k)])


@register("task", "arith_paraphrase")
class ArithParaphrase(Arith):
    name = "arith_paraphrase"
    metrics = variant_metrics(len(TEMPLATES))   # an instance with other templates sets its own

    def __init__(self, templates: list[str] = TEMPLATES, weights: list[float] | None = None,
                 max_operand: int = 99, think: bool = True, seed: int = 1234):
        super().__init__(max_operand=max_operand, think=think, seed=seed)
        templates = list(templates)
        if len(templates) < 2:
            raise ValueError("templates: give at least two phrasings")
        for t in templates:
            if "{a}" not in t or "{b}" not in t:
                raise ValueError(f"template {t!r} must name both {{a}} and {{b}}")
        weights = list(weights) if weights is not None else [0.85] + [0.15 / (len(templates) - 1)] * (len(templates) - 1)
        if len(weights) != len(templates) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"weights: one non-negative weight per template ({len(templates)}), not all 0")
        self.templates, self.weights = templates, weights
        self.metrics = variant_metrics(len(templates))

    def synthetic(self, split: str, n: int, seed: int, test_size: int = 200) -> list[dict]:
        rows = super().synthetic(split, n, seed, test_size)
        rng = random.Random(seed + 7)
        for i, row in enumerate(rows):
            k = i % len(self.templates) if split == "test" else rng.choices(range(len(self.templates)), self.weights)[0]
            row["variants"] = [t.format(a=row["a"], b=row["b"]) for t in self.templates]
            row["template"], row["prompt"] = k, row["variants"][k]
        return rows

    def variants(self, row: dict) -> list[str]:
        """The raw phrasings of one problem (the `variants` column)."""
        return list(row["variants"])
