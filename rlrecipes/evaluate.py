"""Evaluation: sample n completions per problem, judge them with the task, report pass@k.

- mean@n: average accuracy over all n samples (the sampled pass@1).
- pass@k: the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374, eq. 1),
  1 - C(n-c, k) / C(n, k), computed in product form so large n cannot overflow.
- maj@k: majority vote over the answers the task extracts from the first k samples (samples are
  i.i.d., so the first k are a fair draw). Ties go to the answer that appeared first; samples
  with no extractable answer do not vote; no vote at all counts as wrong.
- Intervals: 95% normal intervals over problems, mean ± 1.96 * sample std / sqrt(P); for a
  comparison, the same interval on the per-problem paired differences.
- plcc / srcc (regression tasks): Pearson and Spearman correlation between each problem's
  predicted score and its label over the problems whose samples gave a score; the interval is
  half the width of a seeded 1,000-resample bootstrap's 2.5-97.5 percentile range.
- task metrics (`Task.metrics`, e.g. a critic's verdict accuracy): each problem's mean over its
  samples, then mean ± interval over the problems where it applies; counts X_tp/X_fp/X_fn give
  X_precision, X_recall and X_f1 over all samples (every problem has the same n samples, so
  summed per-problem shares are proportional to the counts).
- consistency@K (a task whose rows have paraphrases, `task.variants(row)`: Info-consistent GRPO,
  arXiv 2512.12858): one more sample for each of a problem's K phrasings; 1 when the K extracted
  answers are identical and present, else 0. With it `h_grp`, the group instability of those K
  answers (rewards/info_consistency.py), and `acc_v<k>`, the accuracy on phrasing k.
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
    """(mean, half-width of the 95% normal interval) over the values that are not NaN (NaN marks
    a problem a task metric does not apply to); (NaN, NaN) when none is left."""
    values = [v for v in values if v == v]
    P = len(values)
    if P == 0:
        return math.nan, math.nan
    mean = sum(values) / P
    if P < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (P - 1)
    return mean, 1.96 * math.sqrt(var / P)


def majority(answers: list) -> object:
    """The most frequent non-None answer; ties go to the one seen first; None if none."""
    counts: dict = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def per_problem(correct_PN, answers_PN, golds_P, ks, judge) -> dict[str, list[float]]:
    """Per-problem values of every metric (the inputs of `summarize` and of paired comparisons)."""
    n = len(correct_PN[0])
    out = {"mean@n": [sum(row) / n for row in correct_PN]}
    for k in sorted({1, *ks}):
        if k <= n:
            out[f"pass@{k}"] = [pass_at_k(n, int(sum(row)), k) for row in correct_PN]
            if answers_PN is not None:
                out[f"maj@{k}"] = [float(judge(majority(ans[:k]), gold))
                                   for ans, gold in zip(answers_PN, golds_P)]
    return out


def reported(ks, samples: int, regression: bool, tool_stats=(), task_metrics=()) -> list[str]:
    """The names `summarize` reports for these settings (each also with `_ci` but the last group)."""
    names = ["mean@n"] + [f"{m}@{k}" for k in sorted({1, *ks}) if k <= samples for m in ("pass", "maj")]
    names += [f"tool_{s}" for s in tool_stats]
    names += [m for m in task_metrics if not m.endswith(COUNTS)]
    names = names + [f"{n}_ci" for n in names]
    if regression:
        names += ["plcc", "srcc", "plcc_ci", "srcc_ci", "scored_frac"]
    if tool_stats:
        names.append("tool_productivity")
    names += [f"{m[:-3]}_{s}" for m in task_metrics if m.endswith("_tp") for s in ("precision", "recall", "f1")]
    return names + ["problems"]


CORPUS_INPUTS = ("pred", "label")  # per-problem values that feed corpus metrics, not means
COUNTS = ("_tp", "_fp", "_fn")     # per-problem shares of samples that feed precision/recall/F1


def classification(values: dict[str, list[float]]) -> dict[str, float]:
    """X_precision, X_recall, X_f1 for every complete X_tp/X_fp/X_fn triple (NaN when undefined)."""
    out = {}
    for name in values:
        prefix = name[:-3]
        if name.endswith("_tp") and all(prefix + c in values for c in COUNTS):
            tp, fp, fn = (sum(values[prefix + c]) for c in COUNTS)
            out[f"{prefix}_precision"] = tp / (tp + fp) if tp + fp else math.nan
            out[f"{prefix}_recall"] = tp / (tp + fn) if tp + fn else math.nan
            out[f"{prefix}_f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return out


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = (x.pow(2).sum() * y.pow(2).sum()).sqrt()
    return (x * y).sum().item() / den.item() if den > 0 else math.nan


def ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties averaged (as scipy.stats.rankdata)."""
    order = x.argsort()
    r = torch.empty_like(x)
    r[order] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    for value in x.unique():
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def correlations(pred: list[float], label: list[float], resamples: int = 1000) -> dict:
    """plcc and srcc with bootstrap intervals, over the problems with a finite prediction."""
    p, g = torch.tensor(pred, dtype=torch.float64), torch.tensor(label, dtype=torch.float64)
    keep = torch.isfinite(p)
    p, g = p[keep], g[keep]
    out = {"scored_frac": keep.double().mean().item()}
    metrics = {"plcc": pearson, "srcc": lambda a, b: pearson(ranks(a), ranks(b))}
    gen = torch.Generator().manual_seed(0)
    draws = [torch.randint(len(p), (len(p),), generator=gen) for _ in range(resamples)] if len(p) > 2 else []
    for name, fn in metrics.items():
        out[name] = fn(p, g) if len(p) > 2 else math.nan
        boot = torch.tensor([fn(p[i], g[i]) for i in draws], dtype=torch.float64)
        boot = boot[torch.isfinite(boot)]
        out[f"{name}_ci"] = ((boot.quantile(0.975) - boot.quantile(0.025)).item() / 2) if len(boot) else math.nan
    return out


def summarize(values: dict[str, list[float]]) -> dict:
    """{metric: mean, metric_ci: half-width} from per-problem values (plus plcc/srcc when the
    values carry predicted scores and labels)."""
    first = next(iter(values.values()))
    out = {"problems": len(first)}
    for name, vals in values.items():
        if name not in CORPUS_INPUTS and not name.endswith(COUNTS):
            out[name], out[f"{name}_ci"] = mean_ci(vals)
    if all(k in values for k in CORPUS_INPUTS):
        out.update(correlations(values["pred"], values["label"]))
    out.update(classification(values))
    if "tool_calls" in values:  # tool productivity (OTC-PO): correct answers per tool call
        calls = sum(values["tool_calls"])
        out["tool_productivity"] = sum(values["mean@n"]) / calls if calls else math.nan
    return out


@torch.no_grad()
def evaluate(model, tokenizer, task, rows, prompts, samples: int, gen, device, ks=(1,),
             batch_size: int = 256, generate_fn=generate, format_fn=None) -> dict[str, list[float]]:
    """Judge `samples` completions of each row with `task.score`; returns the per-problem values
    of every metric (`summarize` turns them into means and intervals; comparisons pair them).
    Per-sequence stats of the generator (tool calls...) become per-problem means too.
    `format_fn(texts, rows)`: raw questions -> prompts (the run's chat template), for the
    paraphrases of a task with `variants` (consistency@K)."""
    correct, answers, stats = [], [], {}
    paraphrased = hasattr(task, "variants")
    grouped = set(variant_names(len(task.variants(rows[0])))) if paraphrased and rows else set()
    extra: dict[str, list[float]] = {name: [] for name in getattr(task, "metrics", ()) if name not in grouped}
    per_call = max(1, batch_size // samples)
    for start in range(0, len(rows), per_call):
        chunk_rows, chunk_prompts = rows[start:start + per_call], prompts[start:start + per_call]
        rollout = generate_fn(model, tokenizer, chunk_prompts, gen, device, repeat=samples)
        for i, row in enumerate(chunk_rows):
            texts = rollout.texts[i * samples:(i + 1) * samples]
            correct.append([task.score(t, row) for t in texts])
            answers.append([task.extract(t) for t in texts])
            if extra:
                per_sample = [task.sample_metrics(t, row) for t in texts]
                for name, column in extra.items():
                    column.append(mean_ci([float(m.get(name, math.nan)) for m in per_sample])[0])
        for name, v in rollout.stats.items():
            stats.setdefault(name, []).extend(v.float().view(-1, samples).mean(1).tolist())
    values = per_problem(correct, answers, rows, list(ks), task.check)
    values.update({f"tool_{name}": v for name, v in stats.items()})
    values.update(extra)
    if task.regression:
        values["pred"] = [task.predicted(ans) for ans in answers]
        values["label"] = [task.label(row) for row in rows]
    if paraphrased:
        if format_fn is None:
            raise ValueError(f"task {task.name!r} has paraphrases: evaluate needs format_fn")
        values.update(variant_values(model, tokenizer, task, rows, gen, device, batch_size, generate_fn, format_fn))
    return values


def variant_names(k: int) -> list[str]:
    return [f"consistency@{k}", "h_grp", *[f"acc_v{i}" for i in range(k)]]


def variant_values(model, tokenizer, task, rows, gen, device, batch_size: int, generate_fn, format_fn) -> dict:
    """Per-problem consistency@K, h_grp and acc_v<k> from one sample of each of the K phrasings."""
    from .rewards.info_consistency import group_entropy
    K = len(task.variants(rows[0]))
    out: dict[str, list[float]] = {name: [] for name in variant_names(K)}
    per_call = max(1, batch_size // K)
    for start in range(0, len(rows), per_call):
        chunk = rows[start:start + per_call]
        questions = [task.variants(row) for row in chunk]
        if any(len(q) != K for q in questions):
            raise ValueError(f"every problem needs the same number of paraphrases ({K} in the first)")
        rollout = generate_fn(model, tokenizer, format_fn([q for qs in questions for q in qs],
                                                          [row for row in chunk for _ in range(K)]),
                              gen, device, repeat=1)
        for i, row in enumerate(chunk):
            texts = rollout.texts[i * K:(i + 1) * K]
            answers = [task.extract(t) for t in texts]
            out[f"consistency@{K}"].append(float(answers[0] is not None and len(set(answers)) == 1))
            out["h_grp"].append(group_entropy([frozenset([a]) if a is not None else frozenset() for a in answers]))
            for k, t in enumerate(texts):
                out[f"acc_v{k}"].append(float(task.score(t, row)))
    return out
