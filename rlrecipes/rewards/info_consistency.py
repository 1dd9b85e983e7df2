"""Information-consistency rewards over a group of paraphrased prompts (Info-consistent GRPO,
Prabhune, Padmanabhan & Dutta, arXiv 2512.12858; abstract only, every formula here is [recon],
specified in shared/papers/next/info_consistent_grpo.md §2).

A group is G consecutive completions (the loop passes `group_size`); with the `paraphrase_groups`
sampler they answer G paraphrases of one question (rollout/paraphrase.py), with plain groups G
samples of one prompt. An extractor maps a completion to its information set I_k:
  - `answer`: {the text inside the last <answer>...</answer>} (empty when there is none);
  - `items`:  that text split on commas, each item stripped (a list of recommendations).
With f(u) the share of the group whose set holds item u and f_{-k}(u) the same share among the
other G - 1 completions:
  - stability (leave-one-out agreement), over the group's items U = union of the I_j:
        s_k = (1/|U|) sum_{u in U} [1(u in I_k) f_{-k}(u) + (1 - 1(u in I_k)) (1 - f_{-k}(u))];
    for single answers, the share of the other completions giving the same answer. `loo: false`
    uses f (self included). A group with no items at all scores 0 (nothing agreed on: silence
    is not consistency); a group of one is not applicable (None).
  - helpfulness (information content): h_k = log(1 + |I_k|) / log(1 + M), M = `catalogue_size`
    (0 for an empty set); with single answers and M = 1 it is 1 for any answer, 0 for none, the
    term that keeps the group from agreeing by saying nothing.
  - group instability (eval diagnostic `h_grp`): H = (1/|U|) sum_u h2(f(u)), h2 the binary
    entropy in bits; 0 iff every item is in all sets or in none.
The spec's paper weights are w_h = w_s = 0.5 [unverified]; a recipe sets them as reward weights.
"""
from __future__ import annotations

import math

from ..errors import UserError
from ..registry import register
from ..tasks.base import extract_answer

EXTRACTORS = ("answer", "items")


def info_set(completion: str, extract: str = "answer") -> frozenset:
    """The information set of one completion (see the module docstring)."""
    if extract not in EXTRACTORS:
        raise UserError("rewards.extract", f"unknown extractor {extract!r}", f"use one of {', '.join(EXTRACTORS)}")
    text = extract_answer(completion)
    if not text:
        return frozenset()
    if extract == "answer":
        return frozenset([text])
    return frozenset(item.strip() for item in text.split(",") if item.strip())


def stability(sets: list[frozenset], loo: bool = True) -> list[float | None]:
    """Per-member agreement s_k of one group's information sets."""
    G = len(sets)
    if G < 2 and loo:
        return [None] * G
    union = set().union(*sets)
    if not union:
        return [0.0] * G
    count = {u: sum(u in s for s in sets) for u in union}
    out = []
    for s in sets:
        total = 0.0
        for u in union:
            inside = u in s
            f = (count[u] - inside) / (G - 1) if loo else count[u] / G
            total += f if inside else 1.0 - f
        out.append(total / len(union))
    return out


def group_entropy(sets: list[frozenset]) -> float:
    """H_grp: mean binary entropy (bits) of the items' group frequencies; 0.0 for no items."""
    union = set().union(*sets)
    if not union:
        return 0.0

    def h2(p: float) -> float:
        return 0.0 if p <= 0.0 or p >= 1.0 else -p * math.log2(p) - (1 - p) * math.log2(1 - p)
    return sum(h2(sum(u in s for s in sets) / len(sets)) for u in union) / len(union)


@register("reward", "info_stability")
def info_stability(prompts: list[str], completions: list[str], group_size: int, extract: str = "answer",
                   loo: bool = True, **columns) -> list[float | None]:
    """Leave-one-out agreement of each completion with the rest of its group (arXiv 2512.12858,
    'stability' reward; formula [recon], module docstring)."""
    if len(completions) % group_size:
        raise ValueError(f"{len(completions)} completions do not split into groups of {group_size}")
    sets = [info_set(c, extract) for c in completions]
    return [s for g in range(0, len(sets), group_size) for s in stability(sets[g:g + group_size], loo)]


@register("reward", "info_helpfulness")
def info_helpfulness(prompts: list[str], completions: list[str], catalogue_size: int = 1,
                     extract: str = "answer", **columns) -> list[float]:
    """log(1 + |I_k|) / log(1 + M) (arXiv 2512.12858, entropy-based 'helpfulness'; [recon])."""
    if catalogue_size < 1:
        raise UserError("rewards.catalogue_size", f"must be >= 1, got {catalogue_size}")
    return [math.log1p(len(info_set(c, extract))) / math.log1p(catalogue_size) for c in completions]
