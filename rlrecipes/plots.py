"""PNG curves of a run from its metrics.jsonl (matplotlib, Agg): `plots/*.png`."""
from __future__ import annotations

import json
from pathlib import Path

PANELS = {
    "reward": lambda k: k == "reward_mean" or k.startswith("reward/"),
    "kl": lambda k: k == "kl",
    "completion_len": lambda k: k == "completion_len",
    "loss": lambda k: k in ("loss", "entropy"),
    "eval": lambda k: k.startswith("eval/") and not k.endswith("_ci") and ("@" in k),
    "scaffold": lambda k: k in ("scaf/all_fail_frac", "scaf/all_fail_after", "scaf/hint_success"),
}


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw(run_dir: Path) -> list[Path]:
    """Redraw every panel that has data; returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out_dir = Path(run_dir) / "plots"
    written = []
    for panel, wanted in PANELS.items():
        keys = sorted({k for row in rows for k in row if wanted(k)})
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            points = [(row["step"], row[key]) for row in rows if key in row]
            style = "o-" if panel == "eval" else "-"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=key, markersize=3)
        ax.set_xlabel("step")
        ax.set_title(f"{Path(run_dir).name}: {panel}")
        written.append(_save(plt, fig, ax, out_dir / f"{panel}.png"))
    curve = budget_curve(rows, out_dir, Path(run_dir).name, plt)
    return written + ([curve] if curve else [])


def budget_curve(rows: list[dict], out_dir: Path, name: str, plt) -> Path | None:
    """`anytime.png`: accuracy vs thinking budget (eval/budget_acc@<b>, AnytimeReasoner's anytime
    eval, rollout/budget.py), one line per eval (the first and the last)."""
    evals = [row for row in rows if any(k.startswith("eval/budget_acc@") for k in row)]
    if not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, row in (("start", evals[0]), ("end", evals[-1]))[:1 if len(evals) == 1 else 2]:
        points = sorted((int(k.rsplit("@", 1)[1]), v) for k, v in row.items()
                        if k.startswith("eval/budget_acc@") and not k.endswith("_ci"))
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-",
                label=f"step {row['step']} ({label}); anytime {row.get('eval/anytime_acc', float('nan')):.3f}")
    ax.set_xlabel("thinking budget (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{name}: accuracy vs budget")
    return _save(plt, fig, ax, out_dir / "anytime.png")


def _save(plt, fig, ax, path: Path) -> Path:
    """Grid, legend, tight layout; write `path` (its folder made if needed) and close the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
