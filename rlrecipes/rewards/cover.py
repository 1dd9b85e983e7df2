"""Coverage marginal gains as segment credit (SubRL / SubPO, arXiv 2307.13372, §4)."""
from __future__ import annotations

from ..registry import register
from ..tasks.base import ANSWER_RE
from ..tasks.cover import gains, parse_sensors
from .dense import PerSegment


@register("reward", "coverage_gain")
def coverage_gain(prompts, completions, targets, answer, k, radius, **_) -> list[PerSegment]:
    """SubPO's per-step reward r_j = F(S_j) - F(S_{j-1}), the marginal gain of the j-th sensor
    of the last <answer> (task `cover`), divided by F of the best placement (`answer`), one
    segment per sensor ending at its last digit: the total is the coverage ratio in [0, 1]. A
    completion with no answer block gets no segments (0). Columns `targets`, `answer`, `k`,
    `radius` come from the task's rows."""
    out = []
    for text, t, best, k_, r in zip(completions, targets, answer, k, radius):
        found = list(ANSWER_RE.finditer(text))
        if not found:
            out.append(PerSegment([]))
            continue
        start = found[-1].start(1)
        parsed = parse_sensors(found[-1].group(1))
        g = gains(t, [p for p, _ in parsed], r, k_)
        out.append(PerSegment([(start + end, gain / int(best)) for (_, end), gain in zip(parsed, g)]))
    return out
