"""Atomic checkpoints, exact resume and the run manifest.

    runs/<name>/checkpoints/step-000050/   model/ (adapter, or full weights), optimizer.pt
                                           (FSDP2: optimizer/, each rank's shards), scheduler.pt,
                                           rng.pt (per rank), components.pt, trainer_state.json
    runs/<name>/checkpoints/best -> step-…

A checkpoint is written to `checkpoints/.tmp-step-…` in the same directory, every file and the
folder are fsynced, then the folder is renamed into place: a crash leaves the previous
checkpoint intact and only a `.tmp-` folder, which `--resume` never takes and the next save
removes. `trainer_state.json` is written last, so a folder without it is never complete.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

STEP_RE = re.compile(r"^step-(\d{6})$")
# Fields a resumed run may change: length and logging/eval/checkpoint frequency.
RESUMABLE_CHANGES = ("train.steps", "eval.every", "checkpoint.every",
                     "checkpoint.keep_last")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_RE.match(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def staging(run_dir: Path, step: int) -> Path:
    """A fresh, empty folder that `save` fills and renames to checkpoint `step` (stale ones from
    an interrupted save removed). A sharded run creates it on rank 0 before every rank writes its
    optimizer shards into it."""
    tmp = staging_path(run_dir, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    for stale in tmp.parent.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    return tmp


def staging_path(run_dir: Path, step: int) -> Path:
    """Where `staging` makes its folder (the other ranks of a sharded run write there too)."""
    final = step_dir(run_dir, step)
    return final.parent / f".tmp-{final.name}"


def save(run_dir: Path, step: int, model, optimizer, scheduler, components: dict, state: dict,
         keep_last: int, keep: tuple[Path, ...] = (), rng: list[dict] | None = None,
         model_state: dict | None = None, staged: Path | None = None) -> Path:
    """Write checkpoint `step` atomically; prune to `keep_last` (never a path in `keep`).
    `rng`: every process's `rng_state()`, by rank (several processes); default this process's.
    `model_state`: the full state dict of a sharded model (`sharding.full_state`). `staged`: the
    `staging` folder the ranks already wrote the optimizer's shards into (sharded runs); else
    the optimizer's `state_dict()` goes to `optimizer.pt`."""
    final = step_dir(run_dir, step)
    tmp = staged if staged is not None else staging(run_dir, step)
    model.save_pretrained(tmp / "model", **({"state_dict": model_state} if model_state is not None else {}))
    if staged is None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng if rng is not None else [rng_state()], tmp / "rng.pt")
    torch.save({name: c.state_dict() for name, c in components.items()}, tmp / "components.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. interrupted right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_tree(final.parent)
    prune(run_dir, keep_last, keep=(final, *keep))
    return final


def prune(run_dir: Path, keep_last: int, keep: tuple[Path, ...] = ()) -> None:
    best = Path(run_dir) / "checkpoints" / "best"
    protected = {Path(p).resolve() for p in keep}
    if best.is_symlink():
        protected.add(best.resolve())
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        if old.resolve() not in protected:
            shutil.rmtree(old)


def mark_best(run_dir: Path, checkpoint: Path) -> None:
    """Point `checkpoints/best` at `checkpoint` (a relative symlink, replaced atomically)."""
    best = checkpoint.parent / "best"
    tmp = checkpoint.parent / ".best.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(checkpoint.name)
    os.replace(tmp, best)


def load(path: Path, model, optimizer, scheduler, components: dict, rank: int = 0, weights: bool = True) -> dict:
    """Restore a checkpoint into live objects; returns trainer_state. RNG is restored last: this
    rank's own state (each process samples its own completions, so each has its own generator
    state). Resumed with more processes than saved it, the extra ranks take rank 0's state (the
    run continues, not bitwise as before: the prompts are shared out differently anyway).
    `weights=False`: the model's weights were loaded already (before sharding it)."""
    from .model import load_weights
    from .sharding import load_optimizer
    if weights:
        load_weights(model, path / "model")
    load_optimizer(model, optimizer, path)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    states = torch.load(path / "components.pt", weights_only=False)
    for name, component in components.items():
        component.load_state_dict(states[name])
    states = torch.load(path / "rng.pt", weights_only=False)
    states = [states] if isinstance(states, dict) else states   # one process's, as written before 2026-12
    set_rng_state(states[rank] if rank < len(states) else states[0])
    return json.loads((path / "trainer_state.json").read_text())


def find_run(recipe_name: str, runs_root: Path = Path("runs")) -> Path:
    """The newest run of `recipe_name` under runs/ that has a complete checkpoint."""
    runs = sorted((p for p in runs_root.glob(f"{recipe_name}-*") if latest_checkpoint(p)),
                  key=lambda p: p.name)
    if not runs:
        raise UserError("--resume", f"no run of {recipe_name!r} with a checkpoint under {runs_root}/",
                        "pass the run directory: --resume runs/NAME-TIME")
    return runs[-1]


def run_recipe_path(run_dir: Path) -> Path:
    """The resolved recipe.yaml a run directory holds; a UserError when it is not a run."""
    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise UserError(str(run_dir), "not a run directory (no recipe.yaml)")
    return path


def check_same_recipe(run_dir: Path, recipe) -> None:
    """Refuse to resume with a recipe that differs in anything but RESUMABLE_CHANGES."""
    import yaml

    from .catalog import flatten
    from .config import to_dict
    saved_path = run_recipe_path(run_dir)
    saved, now = flatten(yaml.safe_load(saved_path.read_text())), flatten(to_dict(recipe))
    for key in sorted(set(saved) | set(now)):
        if key.startswith(RESUMABLE_CHANGES) or saved.get(key) == now.get(key):
            continue
        raise UserError(str(saved_path), f"{key}: the run used {saved.get(key)!r}, the recipe now says "
                        f"{now.get(key)!r}", f"only {', '.join(RESUMABLE_CHANGES)} may change on resume")
