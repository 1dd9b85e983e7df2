"""Run every recipe's tiny preset and print one table: recipe, RL steps, seconds, the eval metric
of `expect.tiny.metric` (pass@1 unless the recipe names another, e.g. srcc) start -> end with 95%
intervals, the gain, and whether the recipe's `expect.tiny.min_gain` holds.

    python benchmarks/tiny_sweep.py                     # all recipes/*.yaml with a tiny preset
    python benchmarks/tiny_sweep.py grpo dapo --json sweep.json
    python benchmarks/tiny_sweep.py --preset tiny_vlm   # the image mode (tiny Qwen2-VL)
    python benchmarks/tiny_sweep.py -o generation.engine=fast   # an override for every run

Each recipe runs in its own `rlrecipes train` subprocess under a temporary folder. A learning
check, not a test: it takes about a minute or two per recipe on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_one(path: Path, out_root: Path, preset: str = "tiny", overrides: list[str] = ()) -> dict:
    raw = yaml.safe_load(path.read_text())
    tiny = (raw.get("expect") or {}).get("tiny") or {}
    min_gain, metric = tiny.get("min_gain"), tiny.get("metric", "pass@1")
    run_dir = out_root / path.stem
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlrecipes", "train", str(path), "--preset", preset,
                           "--output-dir", str(run_dir), *[a for o in overrides for a in ("-o", o)]],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    row = {"recipe": path.stem, "seconds": round(seconds, 1), "min_gain": min_gain, "metric": metric}
    summary = run_dir / "summary.json"
    if proc.returncode or not summary.exists():
        row["error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1][:200]
        return row
    ev = json.loads(summary.read_text())["eval"]
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    start, end = ev["start"], ev["end"]
    row.update(steps=recipe["train"]["steps"], start=start[metric], start_ci=start[f"{metric}_ci"],
               end=end[metric], end_ci=end[f"{metric}_ci"], gain=end[metric] - start[metric])
    row["met"] = None if min_gain is None else row["gain"] >= min_gain
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="*", help="recipe names (default: every recipe with the preset)")
    p.add_argument("--preset", default="tiny", help="the preset to run (default tiny; tiny_vlm for images)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to every run, e.g. -o generation.engine=fast")
    p.add_argument("--keep", type=Path, help="keep each run's directory under this folder (default: a temporary one)")
    args = p.parse_args()
    paths = [ROOT / "recipes" / f"{name}.yaml" for name in args.recipes] or sorted((ROOT / "recipes").glob("*.yaml"))
    paths = [p for p in paths if args.preset in (yaml.safe_load(p.read_text()).get("presets") or {})]
    rows = []
    print(f"{'recipe':16} {'steps':>5} {'sec':>6}  {'metric':6} {'start':>14} -> {'end':>14}  {'gain':>6}  expect")
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            row = run_one(path, args.keep or Path(tmp), args.preset, args.override)
            rows.append(row)
            if "error" in row:
                print(f"{row['recipe']:16} FAILED after {row['seconds']}s: {row['error']}")
            else:
                verdict = "—" if row["met"] is None else ("ok" if row["met"] else "MISSED")
                print(f"{row['recipe']:16} {row['steps']:>5} {row['seconds']:>6.0f}  {row['metric']:6} "
                      f"{row['start']:.3f} ± {row['start_ci']:.3f} -> {row['end']:.3f} ± {row['end_ci']:.3f}  "
                      f"{row['gain']:+.3f}  >= {row['min_gain']} {verdict}", flush=True)
            if args.json:  # after every recipe, so an interrupted sweep keeps what it measured
                args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
