"""Length shaping rewards."""
from __future__ import annotations

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
