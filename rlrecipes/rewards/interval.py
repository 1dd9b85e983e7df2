"""Interval rewards for 1-D grounding (TempSamp-R1, Li et al., arXiv 2509.18056, method: the
non-linear soft advantage; papers/next/tempsamp_r1.md §2; the EasyR1 re-implementation's
`scripts/timelens/timelens_reward.py`).

`interval_iou`: IoU of the predicted and gold intervals (tasks/span.py), optionally passed
through TempSamp-R1's non-linear soft shaping, which the paper applies to the rewards before
the group normalisation so that an injected ground-truth answer (IoU 1) does not dominate its
group:

    r~ = tau + alpha1 * ln(r - tau + 1)                          r >= tau
    r~ = tau - (exp(alpha2 (tau - r)) - 1) / (exp(alpha2) - 1)    r <  tau

tau 0.8, alpha1 0.01, alpha2 1 (paper notes; the fork hard-codes alpha1 0.01). Above tau the
rewards sit on a near-flat plateau (r~(1) = 0.8018, r~(0.9) = 0.8010), below it they are
spread by an exponential ramp (r~(0.5) = 0.5964, r~(0) = 0.0868). Continuous and increasing.
The paper's section and equation numbers were not checked (its body was unavailable; the
constants come from paper notes and the fork) [unverified].

`interval_format`: 1.0 when the last <answer> block holds a parsable interval (the fork's
format term, weight 0.1 there).
"""
from __future__ import annotations

import math

from ..errors import UserError
from ..registry import register
from ..tasks.span import iou, parse_interval


def soft_shape(r: float, tau: float = 0.8, alpha1: float = 0.01, alpha2: float = 1.0) -> float:
    """TempSamp-R1's non-linear soft reward shaping (arXiv 2509.18056, method, "non-linear
    soft advantage"; piecewise log compression above tau, exponential ramp below)."""
    if r >= tau:
        return tau + alpha1 * math.log(r - tau + 1.0)
    return tau - (math.exp(alpha2 * (tau - r)) - 1.0) / (math.exp(alpha2) - 1.0)


@register("reward", "interval_iou")
def interval_iou(prompts, completions, start, end, shape: bool = False, tau: float = 0.8, alpha1: float = 0.01,
                 alpha2: float = 1.0, **columns) -> list[float]:
    """IoU of the completion's last `<answer>a to b</answer>` with [start, end] (inclusive cells;
    0 when nothing parses), passed through `soft_shape` when `shape` (TempSamp-R1, arXiv
    2509.18056, method section). An unparsable answer scores IoU 0 and so r~(0) = 0.0868 when shaped."""
    if not 0.0 < tau <= 1.0 or alpha1 <= 0 or alpha2 <= 0:
        raise UserError("rewards.tau", f"need 0 < tau <= 1, alpha1 > 0 and alpha2 > 0 (got {tau}, {alpha1}, {alpha2})")
    out = []
    for c, s, e in zip(completions, start, end):
        v = iou(parse_interval(c), int(s), int(e))
        out.append(soft_shape(v, tau, alpha1, alpha2) if shape else v)
    return out


@register("reward", "interval_format")
def interval_format(prompts, completions, **columns) -> list[float]:
    """1.0 when the last <answer> block holds "a to b" or "[a, b]" (the fork's format reward,
    arXiv 2509.18056 re-implementation), else 0.0."""
    return [float(parse_interval(c) is not None) for c in completions]
