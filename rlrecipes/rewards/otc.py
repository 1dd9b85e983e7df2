"""OTC-PO tool-efficiency reward (Wang et al., "Acting Less is Reasoning More", arXiv 2504.14870,
§3; named.md §2): correctness times a factor that peaks at the optimal number of tool calls."""
from __future__ import annotations

import math
from typing import Literal

from ..registry import register
from .math import accuracy


def otc_tool_factor(m: int, n: int, c: float = 1.0) -> float:
    """r_tool for m calls when n is optimal (formula consistent across two sources, constants
    [unverified]): with n = 0, cos(m pi / (2m + c)) (1 at m = 0, falling towards 0); otherwise
    sin(f pi / (2n)) with f = 2nm / (m + n), which is 1 at m = n and 0 at m = 0."""
    if n == 0:
        return 1.0 if m == 0 else math.cos(m * math.pi / (2 * m + c))
    f = 2 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


@register("reward", "otc")
def otc(prompts, completions, answer, group_size: int, variant: Literal["grpo", "ppo"] = "grpo",
        c: float = 1.0, alpha: float = 1.0, call_tag: str = "<search>", **columns) -> list[float]:
    """R = alpha * r_tool(m, n) * r_correct, m = the completion's number of `call_tag`s,
    r_correct = the `accuracy` check. OTC-GRPO: n = the fewest calls among the group's correct
    completions (a group with none correct scores 0 anyway). OTC-PPO: no group, n = 0. The
    historical minimum per question that the paper mentions [unverified] is not kept."""
    correct = accuracy(prompts, completions, answer)
    calls = [t.count(call_tag) for t in completions]
    G = group_size if variant == "grpo" else 1
    out = []
    for s in range(0, len(completions), G):
        group = range(s, min(s + G, len(completions)))
        right = [calls[k] for k in group if correct[k]]
        n = min(right) if variant == "grpo" and right else 0
        out += [alpha * otc_tool_factor(calls[k], n, c) * correct[k] for k in group]
    return out
