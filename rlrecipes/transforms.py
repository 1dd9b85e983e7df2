"""SFT data transforms: rewrite one training example before it is formatted and tokenized.

A transform is registered as `transform` and named by an sft stage:

    stages: [{kind: sft, steps: 400, transform: {fn: thought_dropout, p: 0.5}}]

It is called per drawn example as `fn(question, gold, row, rng, **params) -> (question, gold)`,
with the raw question (before any chat template), the gold completion, the data row and the
stage's seeded `random.Random`.
"""
from __future__ import annotations

import re

from .registry import register

TRANSFORM_INPUTS = ("question", "gold", "row", "rng")
THOUGHT_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
EMPTY_THOUGHT = "<think>\n\n</think>"


@register("transform", "thought_dropout")
def thought_dropout(question: str, gold: str, row: dict, rng, p: float = 0.5) -> tuple[str, str]:
    """TON thought dropout (arXiv 2505.16854, §3.1; `sft_grpo_data.py` of kokolerk/TON): with
    probability `p` the gold's thought becomes exactly "<think>\\n\\n</think>", so the SFT model
    learns both to think and to skip. Golds without a thought are left as they are."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if rng.random() < p and THOUGHT_RE.search(gold):
        gold = THOUGHT_RE.sub(EMPTY_THOUGHT, gold, count=1)
    return question, gold


from . import practice_tiny  # noqa: F401,E402  (registers experience_tips: Training-Free GRPO tiny analogue)
