"""The command line (thin: parse, call, print). Every user mistake is one line and exit code 2."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
import yaml
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Run, reproduce and compare RL fine-tuning recipes: one YAML per paper.\n\n"
                       "Examples:\n\n  rlrecipes list\n\n  rlrecipes validate recipes/grpo.yaml\n\n"
                       "  rlrecipes train recipes/grpo.yaml --preset tiny")
console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}

PRESET = typer.Option(None, "--preset", "-p", help="merge the recipe's presets.NAME (e.g. tiny)")
OVERRIDE = typer.Option(None, "--override", "-o", help="dotted override, e.g. -o train.steps=500 (repeatable)")


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="show tracebacks for errors")):
    STATE["debug"] = debug
    if not debug:
        quiet_libraries()


def quiet_libraries() -> None:
    """Keep the terminal for our own progress and results: no weight-loading bars, no library
    deprecation chatter (all of it returns with --debug)."""
    import logging
    import warnings
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    for module in ("transformers", "peft", "torch", "accelerate", "bitsandbytes"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


def fail(err: Exception, code: int = 2):
    if STATE["debug"]:
        raise err
    from rich.markup import escape
    # escape: messages quote YAML and code ("[0.0, 1.1]", "[kind: rl]"), which is not markup
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn):
    """Turn UserError into one line and exit 2 (tracebacks only with --debug)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            fail(err)
    return wrapper


@app.command("list")
@guarded
def list_cmd(directory: Path = typer.Option(Path("recipes"), "--dir", help="folder of recipe YAMLs"),
             as_json: bool = typer.Option(False, "--json", help="print a JSON array for scripts")):
    """List the recipes in recipes/ and every seed paper, with its status.

    Each recipe row names its seed paper's number (`seed`, in the listing order of
    recipes/papers/seed_papers.yaml; empty for baselines such as grpo); a paper without a recipe
    has a row of its own (no name) with its status, planned or out-of-scope, and the reason.
    The last line counts the seed papers by status (a paper with recipes: its best recipe's).

    Example: rlrecipes list --json | jq '.[].name'
    Counts:  rlrecipes list --json | jq '[.[] | select(.seed)] | unique_by(.seed) | group_by(.paper_status) | map({(.[0].paper_status): length}) | add'
    """
    from .catalog import catalogue
    if not directory.is_dir():
        raise UserError(str(directory), "recipe folder not found", "run from the repository root or pass --dir")
    rows, counts = catalogue(directory)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"recipes and seed papers in {directory}/")
    for col in ("#", "name", "paper", "arxiv", "status", "presets"):
        table.add_column(col, overflow="fold")
    for r in rows:
        status = r["status"] + (" (python tool NOT sandboxed: unsafe_local)" if r["tool_sandbox"] == "unsafe_local" else "")
        table.add_row(str(r["seed"] or ""), r["name"] or "—", r["paper"] or r["summary"], r["arxiv"] or "",
                      status if r["name"] else f"{status}: {r['summary']}", ", ".join(r["presets"]))
    console.print(table)
    if counts:
        console.print(f"seed papers ({sum(counts.values())}): " + ", ".join(f"{n} {k}" for k, n in counts.items()),
                      soft_wrap=True)   # one line, for scripts that grep it


@app.command()
@guarded
def show(recipe: Path, preset: Optional[str] = PRESET, override: Optional[List[str]] = OVERRIDE,
         baseline: Optional[Path] = typer.Option(None, help="recipe to diff against (default: grpo.yaml beside it)")):
    """Print the resolved recipe, its paper facts, and how it differs from grpo.yaml.

    Example: rlrecipes show recipes/dapo.yaml --preset tiny
    """
    from .catalog import diff_from_baseline
    from .config import load_recipe, to_dict
    r = load_recipe(recipe, preset, override or [])
    console.rule(f"[bold]{r.name}[/] — {r.paper.title}")
    console.print(f"arXiv {r.paper.arxiv or '—'}  {r.paper.url or ''}\nstatus: {r.fidelity.status}. {r.fidelity.notes}")
    if r.summary:
        console.print(f"\n{r.summary}")
    if r.sources:
        table = Table(title="hyperparameters and their sources")
        table.add_column("field")
        table.add_column("source", overflow="fold")
        for field, src in r.sources.items():
            table.add_row(field, src)
        console.print(table)
    if r.expect.paper or r.expect.tiny:
        console.print(f"expected: paper {r.expect.paper}  tiny {r.expect.tiny}")
    console.print(Syntax(yaml.safe_dump(to_dict(r), sort_keys=False), "yaml"))
    base_path = baseline or recipe.parent / "grpo.yaml"
    if base_path.exists() and base_path.resolve() != recipe.resolve():
        rows = diff_from_baseline(r, load_recipe(base_path, preset if preset else None, override or []))
        table = Table(title=f"differences from {base_path}")
        for col in ("field", base_path.stem, r.name):
            table.add_column(col, overflow="fold")
        for field, a, b in rows:
            table.add_row(field, str(a), str(b))
        console.print(table if rows else f"no algorithmic differences from {base_path}")


@app.command()
@guarded
def validate(recipes: List[Path], preset: Optional[str] = PRESET, override: Optional[List[str]] = OVERRIDE):
    """Check schema, component names and parameters (no model is loaded).

    Without --preset every preset is checked too. Example: rlrecipes validate recipes/*.yaml
    """
    from .config import load_raw, load_recipe
    for path in recipes:
        if preset is None:
            load_recipe(path, None, override or [])   # also checks that presets: is well formed
            presets = sorted(load_raw(path).get("presets") or {})
        else:
            presets = [preset]
        for name in presets:
            load_recipe(path, name, override or [])
        shown = f" (presets: {', '.join(presets)})" if presets else ""
        console.print(f"[green]ok[/] {path}{shown}")


@app.command()
@guarded
def train(recipe: Path, preset: Optional[str] = PRESET, override: Optional[List[str]] = OVERRIDE,
          output_dir: Optional[str] = typer.Option(None, "--output-dir", help="run directory (default runs/<name>-<time>)"),
          seed: Optional[int] = typer.Option(None, help="shorthand for -o train.seed=N"),
          resume: Optional[str] = typer.Option(None, "--resume", is_flag=False, flag_value="latest",
                                               help="continue a run: --resume (newest run of this recipe) or --resume RUN_DIR")):
    """Train a recipe: its SFT stage (if any), then RL, with eval before and after.

    Examples:\n
      rlrecipes train recipes/grpo.yaml --preset tiny\n
      rlrecipes train recipes/grpo.yaml -o train.steps=500 -o model.adapter=qlora\n
      rlrecipes train recipes/grpo.yaml --preset tiny --resume runs/grpo-20261127-1200\n
      accelerate launch --multi_gpu --num_processes 4 -m rlrecipes train recipes/grpo.yaml
    """
    from .config import load_recipe
    from .run import TrainingStopped
    from .run import train as run_train
    overrides = list(override or []) + ([f"train.seed={seed}"] if seed is not None else [])
    r = load_recipe(recipe, preset, overrides)
    if resume and output_dir:
        raise UserError("--output-dir", "cannot be combined with --resume (the run directory is reused)")
    try:
        summary = run_train(r, output_dir, say=console.print, resume=resume, recipe_path=str(recipe))
    except TrainingStopped as stop:
        err_console.print(f"[bold yellow]stopped:[/] {stop}", highlight=False, soft_wrap=True)
        raise typer.Exit(stop.exit_code)
    except KeyboardInterrupt:  # before the RL loop (SFT, setup) or a second Ctrl-C
        err_console.print("interrupted before a checkpoint could be written; start the run again")
        raise typer.Exit(130)
    ev = summary["eval"]
    if "start" in ev and "end" in ev and os.environ.get("RANK", "0") == "0":
        shown = [m for m in ("pass@1", "srcc", "plcc") if m in ev["end"] and m in ev["start"]]
        console.print("; ".join(f"{m} {ev['start'][m]:.3f} -> {ev['end'][m]:.3f} (±{ev['end'][m + '_ci']:.3f})"
                                for m in shown) + f"; summary: {summary['run_dir']}/summary.json")


@app.command("eval")
@guarded
def eval_cmd(target: Path = typer.Argument(..., help="a run directory or a recipe file"),
             checkpoint: str = typer.Option("latest", help="latest | best | final | step-000050 | base"),
             preset: Optional[str] = PRESET, override: Optional[List[str]] = OVERRIDE,
             samples: Optional[int] = typer.Option(None, help="completions per problem (default eval.samples)"),
             k: Optional[str] = typer.Option(None, help="comma-separated k for pass@k / maj@k, e.g. 1,4,16"),
             split: str = typer.Option("test", help="test | train"),
             limit: Optional[int] = typer.Option(None, help="evaluate only the first N problems"),
             compare: Optional[str] = typer.Option(None, help="base: also evaluate the adapter-disabled model"),
             as_json: bool = typer.Option(False, "--json", help="print the result as JSON")):
    """Evaluate a checkpoint: mean@n, unbiased pass@k, maj@k with 95% intervals.

    Examples:\n
      rlrecipes eval runs/grpo-20261127-1200 --checkpoint best --compare base\n
      rlrecipes eval recipes/grpo.yaml --preset tiny --checkpoint base --samples 16 --k 1,4,16
    """
    from .evalrun import run_eval_command
    if split not in ("test", "train"):
        raise UserError("--split", f"{split!r} is not a split", "valid: test, train")
    if compare not in (None, "base"):
        raise UserError("--compare", f"{compare!r} is not supported", "valid: base")
    try:
        ks = [int(x) for x in k.split(",")] if k else None
    except ValueError:
        raise UserError("--k", f"{k!r} is not a comma-separated list of integers") from None
    result = run_eval_command(target, checkpoint, preset, override or [], samples, ks, split, limit, compare)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{target} — {checkpoint} ({result['problems']} problems × {result['samples']} samples, {split})")
    table.add_column("metric")
    table.add_column(checkpoint)
    if "base" in result:
        table.add_column("base")
        table.add_column("gain")
    for name in [key for key in result if "@" in key and not key.endswith("_ci")]:
        row = [name, f"{result[name]:.3f} ± {result[name + '_ci']:.3f}"]
        if "base" in result:
            row += [f"{result['base'][name]:.3f} ± {result['base'][name + '_ci']:.3f}",
                    f"{result['gain'][name]:+.3f} ± {result['gain'][name + '_ci']:.3f}"]
        table.add_row(*row)
    console.print(table)
    if "written" in result:
        console.print(f"written: {result['written']}")


@app.command()
@guarded
def export(run_dir: Path = typer.Argument(..., help="a run directory"),
           merge: Path = typer.Option(..., "--merge", help="the folder to write (new, or empty)"),
           checkpoint: str = typer.Option("final", help="final | latest | best | step-000050")):
    """Write a run's policy as a standard Hugging Face model folder, the adapter merged in.

    LoRA: W + s·BA; QLoRA: the de-quantised 4-bit base plus the adapter; full fine-tune: its
    weights. Loads with AutoModelForCausalLM.from_pretrained; vllm can serve it.

    Example: rlrecipes export runs/grpo-20261127-1200 --merge exports/grpo
    """
    from .export import export as export_run
    info = export_run(run_dir, merge, checkpoint)
    what = "full fine-tune weights" if info["adapter"] == "none" else f"{info['adapter']} adapter merged into {info['base']}"
    console.print(f"wrote {merge} ({what}, {info['dtype']})")


@app.command()
@guarded
def compare(run_dirs: List[Path] = typer.Argument(..., help="two or more run directories"),
            out: Path = typer.Option(Path("compare.png"), help="where the figure goes (.png, .pdf or .svg)")):
    """One table of the runs' eval results (training start -> end and any `rlrecipes eval`
    results, 95% intervals) and one figure of their reward and eval curves side by side.

    Example: rlrecipes compare runs/grpo-1200 runs/dapo-1300 --out ablation.png
    """
    from .compare import check_out, draw, load_runs, table
    check_out(out)
    runs = load_runs(run_dirs)
    console.print(table(runs))
    console.print(f"wrote {draw(runs, out).resolve()}")


@app.command()
@guarded
def plot(run_dir: Path):
    """Redraw a run's plots/ (reward, KL, completion length, loss, eval curves) from metrics.jsonl.

    Example: rlrecipes plot runs/grpo-20261127-1200
    """
    from .plots import draw
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(str(run_dir), "no metrics.jsonl here", "pass a run directory")
    for path in draw(run_dir):
        console.print(f"wrote {path}")


def run():  # pragma: no cover - console entry used by `python -m`
    app(prog_name="rlrecipes")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
