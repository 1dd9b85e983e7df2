"""`rlrecipes compare RUN_A RUN_B …`: the runs' eval results in one table and their reward and
eval curves side by side in one figure — the figure an ablation needs.

What is read, all written by rlrecipes itself:
- `metrics.jsonl` (run.py / loop.py): one JSON object per line with `step`; training lines carry
  `loss` and `reward_mean`, eval lines carry `eval/<metric>` and `eval/<metric>_ci` (step 0 is
  the eval at start).
- `summary.json` `eval.start` / `eval.end` (run.py, from loop.py): `{metric: mean, metric_ci: half-width}` as
  `evaluate.summarize` gives them (95% intervals); a run still going has no summary, so its
  first and last eval lines stand in.
- `eval/<checkpoint>.json` (evalrun.py, from `rlrecipes eval RUN --checkpoint NAME`): the same
  summary plus `checkpoint`, `split` and `samples`; each becomes a row of its own.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import UserError
from .plots import read_metrics

HEADLINE = ("pass@", "mean@", "maj@", "plcc", "srcc")
FIGURE_TYPES = (".png", ".pdf", ".svg")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(str(path), f"not valid JSON ({exc.msg}, line {exc.lineno})",
                        "rerun the command that wrote it") from None


def load_run(path: Path) -> dict:
    """A run directory's metric lines, training eval (start/end) and `rlrecipes eval` results;
    a one-line UserError for a path that is not a run or has not logged a step."""
    hint = "pass folders that `rlrecipes train` wrote, e.g. runs/grpo-20261127-1200"
    if not path.exists():
        raise UserError(str(path), "no such folder", hint)
    if not (path / "recipe.yaml").is_file():
        raise UserError(str(path), "not a run directory (no recipe.yaml)", hint)
    rows = read_metrics(path)
    if not rows:
        raise UserError(str(path), "no metrics.jsonl lines yet", "compare runs that have logged at least one step")
    summary = path / "summary.json"
    evals = _read_json(summary).get("eval", {}) if summary.exists() else {}
    lines = [{k[5:]: v for k, v in r.items() if k.startswith("eval/")} for r in rows]
    lines = [e for e in lines if e]
    if lines and "end" not in evals:
        evals = {"start": evals.get("start") or lines[0], "end": lines[-1]}
    extra = [_read_json(p) for p in sorted((path / "eval").glob("*.json"))]
    return {"path": path, "name": path.name, "rows": rows, "eval": evals, "extra": extra}


def load_runs(paths: list[Path]) -> list[dict]:
    """`load_run` for each; labelled by folder name, or by the path given when names repeat."""
    runs = [load_run(p) for p in paths]
    if len({r["name"] for r in runs}) < len(runs):
        for run in runs:
            run["name"] = str(run["path"])
    return runs


def _order(metric: str) -> tuple:
    prefix = next(i for i, h in enumerate(HEADLINE) if metric.startswith(h))
    k = metric.split("@")[-1]
    return prefix, int(k) if k.isdigit() else 0, metric


def headline_metrics(runs: list[dict]) -> list[str]:
    """Headline metrics (pass@k by k, mean@n, maj@k, plcc, srcc) that any run's eval reports;
    a run without one shows '—' rather than the column being dropped."""
    found = set()
    for run in runs:
        for ev in [*run["eval"].values(), *run["extra"]]:
            found |= {k for k in ev if k.startswith(HEADLINE) and not k.endswith("_ci")}
    return sorted(found, key=_order)


def cell(ev: dict, metric: str) -> str:
    """'0.625 ± 0.050' (mean ± 95% half-width); '—' when the eval lacks the metric."""
    if metric not in ev:
        return "—"
    ci = ev.get(f"{metric}_ci")
    shown = ci is not None and not math.isnan(ci)   # one problem: no interval
    return f"{ev[metric]:.3f}" + (f" ± {ci:.3f}" if shown else "")


def table(runs: list[dict]):
    """A rich Table with a row per eval: each run's training eval at start and at end, then its
    `rlrecipes eval` results; one value ± interval a cell, so it stays narrow."""
    from rich.table import Table
    metrics = headline_metrics(runs)
    out = Table(title="eval results (mean ± 95% interval)")
    for column in ["run", "steps", "eval", *metrics]:
        out.add_column(column, overflow="fold")   # a run name wraps, never cut short
    for run in runs:
        steps = max((r["step"] for r in run["rows"] if "loss" in r), default=0)
        rows = [(when, run["eval"][when]) for when in ("start", "end") if when in run["eval"]]
        rows += [(f"eval {res.get('checkpoint', '?')}: {res.get('split', '?')}, "
                  f"{res.get('problems', '?')}×{res.get('samples', '?')}", res) for res in run["extra"]]
        for i, (source, ev) in enumerate(rows or [("none yet", {})]):
            out.add_row(run["name"], str(steps), source, *[cell(ev, m) for m in metrics],
                        end_section=i == max(len(rows), 1) - 1)
    return out


def check_out(out: Path) -> None:
    if out.is_dir():
        raise UserError("--out", f"{out} is a folder", "give a file name, e.g. --out ablation.png")
    if out.suffix.lower() not in FIGURE_TYPES:
        raise UserError("--out", f"{out.name}: unknown figure type", f"end it in {', '.join(FIGURE_TYPES)}")


def figure(runs: list[dict], metric: str | None):
    """reward_mean by step (left) and `metric` at each eval with its interval (right), one line
    per run; returns the matplotlib Figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        points = [(r["step"], r["reward_mean"]) for r in run["rows"] if "reward_mean" in r]
        left.plot([p[0] for p in points], [p[1] for p in points], "-", label=run["name"])
        key = f"eval/{metric}"
        points = [(r["step"], r[key], r.get(f"{key}_ci", 0.0)) for r in run["rows"] if key in r]
        if points:
            right.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                           fmt="o-", capsize=3, markersize=3, label=run["name"])
    left.set_title("reward_mean")
    right.set_title(f"eval {metric or '(no eval metric)'} (± 95% interval)")
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw(runs: list[dict], out: Path) -> Path:
    """Write the figure (pass@1 on the right, else the first headline metric) to `out`."""
    import matplotlib.pyplot as plt
    metrics = headline_metrics(runs)
    fig = figure(runs, "pass@1" if "pass@1" in metrics else (metrics[0] if metrics else None))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
