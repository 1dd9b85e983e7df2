"""Correctness rewards for problems with a final answer."""
from __future__ import annotations

from ..registry import register
from ..tasks.base import extract_answer, same_answer


@register("reward", "accuracy")
def accuracy(prompts, completions, answer, **columns) -> list[float]:
    """1.0 when the last <answer>...</answer> equals the `answer` column (numerically when both are
    numbers), else 0.0. The rule-based accuracy reward of DeepSeek-R1 (arXiv 2501.12948, §2.2.2)."""
    return [float(same_answer(extract_answer(c), a)) for c, a in zip(completions, answer)]
