"""`rlrecipes compare RUN_A RUN_B …`: the runs' eval results in one table (start → end with 95%
intervals, as `summary.json` and the eval lines of `metrics.jsonl` hold them) and one figure of
their reward and eval curves side by side — the figure an ablation needs."""
from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import run_recipe_path
from .errors import UserError
from .plots import read_metrics

HEADLINE = ("pass@", "mean@", "maj@", "plcc", "srcc")


def load_run(path: Path) -> dict:
    """A run directory's name, metric lines and eval start/end (summary.json, else the eval
    lines of metrics.jsonl); a UserError for a folder that is not a run."""
    run_recipe_path(path)   # names the folder when it has no recipe.yaml
    rows = read_metrics(path)
    if not rows:
        raise UserError(str(path), "no metrics.jsonl lines yet", "compare runs that have trained at least one step")
    summary = path / "summary.json"
    evals = json.loads(summary.read_text()).get("eval", {}) if summary.exists() else {}
    lines = [{k[5:]: v for k, v in r.items() if k.startswith("eval/")} for r in rows]
    lines = [e for e in lines if e]
    if lines and "end" not in evals:
        evals = {"start": evals.get("start") or lines[0], "end": lines[-1]}
    return {"name": path.name, "rows": rows, "eval": evals}


def headline_metrics(runs: list[dict]) -> list[str]:
    """Metrics every run's final eval reports, headline ones (pass@k, mean@n, …) in order."""
    keys = [set(r["eval"].get("end", {})) for r in runs]
    common = set.intersection(*keys) if keys else set()
    return sorted(k for k in common if k.startswith(HEADLINE) and not k.endswith("_ci"))


def cell(ev: dict, metric: str) -> str:
    if metric not in ev:
        return "—"
    ci = ev.get(f"{metric}_ci")
    return f"{ev[metric]:.3f}" + (f" ± {ci:.3f}" if ci is not None else "")


def draw(runs: list[dict], metric: str | None, out: Path) -> Path:
    """reward_mean by step (left) and `metric` at each eval (right), one line per run."""
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
    right.set_title(f"eval {metric or '(no common metric)'} (± 95% interval)")
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
