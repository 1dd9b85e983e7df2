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
