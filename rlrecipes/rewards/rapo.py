"""RAPO rewards of Aes-R1 (arXiv 2509.21871, §3; ssssmark/AesR1
`train/rapo/src/open-r1-multimodal/src/open_r1/rapo.py`): an absolute term on each score and a
relative term that ranks it against the other prompts of the same reward call. Labels (MOS)
come from the `answer` column on a [0, 1] scale; the format term is the `format` reward."""
from __future__ import annotations

import math

from ..registry import register
from ..tasks.rating import parse_score

# The reference draws random.randint(1, 5) when a completion has no number; we use its mean, so
# runs stay deterministic (a documented deviation).
FALLBACK = 3.0


def _scores(completions: list[str], fallback: float) -> list[float]:
    out = []
    for c in completions:
        s = parse_score(c)
        out.append(fallback if s is None else s)
    return out


@register("reward", "rapo_absolute")
def rapo_absolute(prompts, completions, answer, sigma: float = 0.1, fallback: float = FALLBACK,
                  **columns) -> list[float]:
    """Gaussian kernel on the score error (AesR1 `error_reward`):
    r = exp(-0.5 (|pred - label| / sigma)^2) + 1e-5, rounded to 4 decimals (sigma 0.1 on [0, 1])."""
    preds = _scores(completions, fallback)
    return [round(math.exp(-0.5 * (abs(p - float(g)) / sigma) ** 2) + 1e-5, 4) for p, g in zip(preds, answer)]


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@register("reward", "rapo_rank")
def rapo_rank(prompts, completions, answer, group_size: int, fallback: float = FALLBACK, **columns) -> list[float]:
    """Fidelity ranking reward (AesR1 `rank_reward`, from VisualQuality-R1): completions come in
    groups of `group_size` per prompt. For completion j of prompt i and every other prompt z of
    the call, with mu_z the mean and v the unbiased variance of a prompt's predicted scores,

        P = Phi((p_ij - mu_z) / sqrt(v_i + v_z + 1e-6)),  gt = [label_i >= label_z],
        f = sqrt(P gt + 1e-6) + sqrt((1 - P)(1 - gt) + 1e-6);   r_ij = mean_z f.

    A NaN (a group of one has no variance) counts as 0, and so does a call with one prompt.
    Under several processes each rank ranks against the prompts it holds."""
    preds = _scores(completions, fallback)
    G = group_size
    groups = [preds[s:s + G] for s in range(0, len(preds), G)]
    labels = [float(answer[s]) for s in range(0, len(preds), G)]
    mu = [sum(g) / len(g) for g in groups]
    var = [sum((x - m) ** 2 for x in g) / (len(g) - 1) if len(g) > 1 else math.nan for g, m in zip(groups, mu)]
    out = []
    for i, group in enumerate(groups):
        others = [z for z in range(len(groups)) if z != i]
        for p in group:
            fs = []
            for z in others:
                P = _normal_cdf((p - mu[z]) / math.sqrt(var[i] + var[z] + 1e-6))
                gt = 1.0 if labels[i] >= labels[z] else 0.0
                fs.append(math.sqrt(P * gt + 1e-6) + math.sqrt((1 - P) * (1 - gt) + 1e-6))
            r = sum(fs) / len(fs) if fs else math.nan
            out.append(0.0 if math.isnan(r) else r)
    return out
