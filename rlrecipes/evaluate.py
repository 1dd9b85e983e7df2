"""Evaluation: sample n completions per problem, judge them with the task, report pass@k.

pass@k is the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374, eq. 1),
1 - C(n-c, k) / C(n, k), computed in product form so large n cannot overflow. mean@n is the
average accuracy (the sampled pass@1). Intervals are 95% normal intervals over problems
(1.96 * sample std / sqrt(P)).
"""
from __future__ import annotations

import math

import torch

from .rollout.generate import generate


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - prod_{i=n-c+1}^{n} (1 - k/i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% normal interval)."""
    P = len(values)
    mean = sum(values) / P
    if P < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (P - 1)
    return mean, 1.96 * math.sqrt(var / P)


def summarize(correct_PN: list[list[float]], ks: list[int]) -> dict:
    """Metrics from per-problem lists of per-sample correctness (0/1)."""
    n = len(correct_PN[0])
    out = {"problems": len(correct_PN), "samples": n}
    mean, ci = mean_ci([sum(row) / n for row in correct_PN])
    out["mean@n"], out["mean@n_ci"] = mean, ci
    for k in sorted({1, *ks}):
        if k <= n:
            mean, ci = mean_ci([pass_at_k(n, int(sum(row)), k) for row in correct_PN])
            out[f"pass@{k}"], out[f"pass@{k}_ci"] = mean, ci
    return out


@torch.no_grad()
def evaluate(model, tokenizer, task, rows, prompts, samples: int, gen, device, ks=(1,),
             batch_size: int = 256) -> dict:
    """Judge `samples` completions of each row with `task.score`; return `summarize`'s metrics."""
    correct = []
    per_call = max(1, batch_size // samples)
    for start in range(0, len(rows), per_call):
        chunk_rows, chunk_prompts = rows[start:start + per_call], prompts[start:start + per_call]
        rollout = generate(model, tokenizer, chunk_prompts, gen, device, repeat=samples)
        for i, row in enumerate(chunk_rows):
            texts = rollout.texts[i * samples:(i + 1) * samples]
            correct.append([task.score(t, row) for t in texts])
    return summarize(correct, list(ks))
