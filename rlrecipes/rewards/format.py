"""Format rewards: does the completion follow the <think>...</think><answer>...</answer> layout."""
from __future__ import annotations

import re

from ..registry import register

THINK_ANSWER = r"<think>.*?</think>\s*<answer>.*?</answer>"


@register("reward", "format")
def format_reward(prompts, completions, pattern: str = THINK_ANSWER, **columns) -> list[float]:
    """1.0 when the whole completion (stripped) matches `pattern` (re.DOTALL full match), else 0.0.
    The format reward of DeepSeek-R1 (arXiv 2501.12948, §2.2.2); the default pattern is open-r1's
    and TRL's `think_format_reward` with an answer block, and accepts an empty thought (TON)."""
    regex = re.compile(pattern, re.DOTALL)
    return [1.0 if regex.fullmatch(c.strip()) else 0.0 for c in completions]


THOUGHT = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@register("reward", "skip_think")
def skip_think(prompts, completions, only: str | None = None, difficulty: list | None = None,
               **columns) -> list[float | None]:
    """A metric (use with weight 0): 1.0 when the completion's thought strips to empty (TON,
    arXiv 2505.16854, skip-think ratio), 0.0 when it has content or no thought at all. With
    `only`, rows whose `difficulty` column differs give None, so the logged mean is the skip
    ratio of that difficulty alone."""
    out: list[float | None] = []
    for i, c in enumerate(completions):
        if only is not None and (difficulty is None or difficulty[i] != only):
            out.append(None)
            continue
        m = THOUGHT.search(c)
        out.append(1.0 if m and not m.group(1).strip() else 0.0)
    return out
