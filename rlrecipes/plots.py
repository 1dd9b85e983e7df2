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
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out_dir.mkdir(exist_ok=True)
        path = out_dir / f"{panel}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
