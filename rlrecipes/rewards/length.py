"""Length shaping rewards: DAPO's overlong punishment, open-rs's cosine length scaling and tag count."""
from __future__ import annotations

import math
from typing import Literal

from ..registry import register


@register("reward", "overlong_penalty")
def overlong_penalty(prompts, completions, completion_ids, max_length: int, cache_length: int,
                     **columns) -> list[float]:
    """DAPO's soft overlong punishment (arXiv 2503.14476, §3.4, eq. 13), added to the task reward:

        R(L) = 0                                   if L <= max_length - cache_length
               ((max_length - cache_length) - L) / cache_length   if L <= max_length
               -1                                  if L > max_length

    L is the completion's token count including EOS (TRL's `completion_ids`). The paper uses
    max_length 20480 with a 4096-token cache: L = 16384 -> 0, 17408 -> -0.25, 20480 -> -1."""
    if not 0 < cache_length <= max_length:
        raise ValueError(f"need 0 < cache_length <= max_length, got {cache_length}, {max_length}")
    safe = max_length - cache_length
    out = []
    for ids in completion_ids:
        L = len(ids)
        out.append(0.0 if L <= safe else (safe - L) / cache_length if L <= max_length else -1.0)
    return out


@register("reward", "cosine_length")
def cosine_length(prompts, completions, answer, min_wrong: float = 0.0, max_wrong: float = -0.5,
                  min_correct: float = 0.5, max_correct: float = 1.0, max_len: int = 1000,
                  answer_format: Literal["tag", "boxed"] = "tag", **columns) -> list[float]:
    """Cosine length-scaled correctness reward (open-rs, arXiv 2503.16219, §2; from
    "Demystifying Long CoT Reasoning"): with L the completion's length in characters,
    progress = min(L / max_len, 1) and c = cos(pi * progress),

        correct: min_correct + 0.5 (max_correct - min_correct)(1 + c)   (short right answers earn more)
        wrong:   max_wrong + 0.5 (min_wrong - max_wrong)(1 + c)         (short wrong answers cost more)

    Defaults are open-rs's CLI values. Correctness: the last <answer> tag equals the `answer`
    column (`tag`), or the last \\boxed{} verifies (`boxed`). Capping progress at 1 is ours: the
    reference keeps oscillating past max_len."""
    from ..tasks.base import extract_answer, same_answer
    from .boxed import score_boxed
    out = []
    for c, a in zip(completions, answer):
        right = score_boxed(c, a) == 1.0 if answer_format == "boxed" else same_answer(extract_answer(c), a)
        cos = math.cos(math.pi * min(len(c) / max_len, 1.0))
        lo, hi = (min_correct, max_correct) if right else (max_wrong, min_wrong)
        out.append(lo + 0.5 * (hi - lo) * (1.0 + cos))
    return out


@register("reward", "tag_count")
def tag_count(prompts, completions, **columns) -> list[float]:
    """open-rs tag count (arXiv 2503.16219; knoveleng/open-rs rewards.py): +0.5 each when
    "<think>\\n" and "\\n</think>\\n" appear exactly once."""
    return [0.5 * (c.count("<think>\n") == 1) + 0.5 * (c.count("\n</think>\n") == 1) for c in completions]
