"""`rlrecipes train`: set up a run directory, data, model and components, then run the stages.

Run directory: runs/<name>-<YYYYmmdd-HHMMSS>/ with recipe.yaml, manifest.json, metrics.jsonl,
sft-model/ (after an SFT stage), final/ (the trained adapter or model) and summary.json.
"""
from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from . import checkpoint, plots, sharding, tracking
from .loop import TrainingStopped, rl_stage
from .config import to_dict
from .errors import UserError
from .model import load_tokenizer, resolve_path
from .progress import StepProgress
from .rollout.multiturn import make_generator
from .rollout.tools import require_sandbox, tool_sandbox
from .registry import construct, get
from .rewards.combine import RewardFn, check_columns
from .practice_stage import run_practice
from .rm import run_rm
from .sft import run_sft
from .tasks import load_splits
from .vision import attach, chat_content, processor_of, require_vision, row_images


def format_prompts(tokenizer, texts: list[str], chat_template: bool, rows: list[dict] | None = None) -> list[str]:
    """Prompts from raw questions: the chat template when asked, and on a VLM the images of
    `rows` (one per text) attached (`vision.ImagePrompt`)."""
    vision = rows is not None and processor_of(tokenizer) is not None
    if chat_template:
        if getattr(tokenizer, "chat_template", None) is None:
            raise UserError("model.chat_template", "the tokenizer has no chat template",
                            "set model.chat_template: false, or use an instruct model's tokenizer")
        n_images = [len(row_images(r)) for r in rows] if vision else [0] * len(texts)
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": chat_content(t, n) if n else t}],
                                               tokenize=False, add_generation_prompt=True)
                 for t, n in zip(texts, n_images)]
    return attach(texts, rows) if vision else texts


def check_modality(recipe, rows: list[dict]) -> None:
    """Rows with images need a vision-language model; tool rollouts are text-only."""
    if rows and row_images(rows[0]):
        require_vision(recipe, f"the {recipe.data.task!r} rows have images but the model is text-only")


def make_run_dir(recipe, output_dir: str | None, accelerator) -> Path:
    from accelerate.utils import broadcast_object_list
    path = [output_dir or f"runs/{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"]
    if accelerator.num_processes > 1:
        broadcast_object_list(path)
    run_dir = Path(path[0])
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return run_dir


def write_manifest(run_dir: Path, recipe, accelerator, recipe_path: str | None = None) -> None:
    import importlib.metadata as md
    versions = {}
    for pkg in ("rlrecipes", "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    resolved = yaml.safe_dump(to_dict(recipe), sort_keys=False)
    manifest = {"command": sys.argv, "recipe_path": recipe_path, "python": platform.python_version(),
                "versions": versions, "git_commit": git_commit(), "seed": recipe.train.seed,
                "device": str(accelerator.device), "processes": accelerator.num_processes,
                "distributed": "fsdp2" if sharding.requested() else
                (None if accelerator.num_processes == 1 else "ddp"),
                "recipe_sha256": hashlib.sha256(resolved.encode()).hexdigest(),
                "tool_sandbox": tool_sandbox(recipe)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (run_dir / "recipe.yaml").write_text(resolved)


def git_commit() -> str | None:
    """The commit of the rlrecipes checkout, when it is one (None for an installed package)."""
    import subprocess
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def train(recipe, output_dir: str | None = None, say=print, resume: str | None = None,
          recipe_path: str | None = None) -> dict:
    """Run every stage of `recipe`; returns the summary also written to summary.json.

    `resume`: a run directory, or "latest" for the newest run of this recipe under runs/.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if tool_sandbox(recipe) == "bwrap":
        require_sandbox()   # before a run directory exists
    sharding.check_launcher()   # DeepSpeed / FSDP1: refused before accelerate starts or any file is made
    tracking.check(recipe)      # a named tracker's library is missing
    acc = Accelerator(cpu=not torch.cuda.is_available())  # cpu=True lets torchrun on CPU use gloo
    if recipe.train.prompts_per_step % acc.num_processes:
        raise UserError("train.prompts_per_step", f"{recipe.train.prompts_per_step} prompts do not split "
                        f"evenly over {acc.num_processes} processes", "make it a multiple of the process count")
    if sharding.requested() and recipe.model.adapter == "qlora":
        raise UserError("model.adapter", "QLoRA's 4-bit base weights are not sharded by FSDP2 here",
                        "use adapter: lora with FSDP, or QLoRA under DDP")
    resume_from = None
    if resume:
        run_dir = checkpoint.find_run(recipe.name) if resume == "latest" else Path(resume)
        checkpoint.check_same_recipe(run_dir, recipe)
        if any(s.kind == "rl" for s in recipe.stages):   # a practice stage resumes from its own state file
            resume_from = checkpoint.latest_checkpoint(run_dir)
            if resume_from is None:
                raise UserError(str(run_dir), "no complete checkpoint to resume from", "start a new run")
            done = json.loads((resume_from / "trainer_state.json").read_text())["step"]
            if done >= recipe.train.steps:
                raise UserError("train.steps", f"nothing to do: {run_dir} is at step {done} of "
                                f"{recipe.train.steps}", f"raise it, e.g. -o train.steps={done * 2}")
    else:
        run_dir = make_run_dir(recipe, output_dir, acc)
    set_seed(recipe.train.seed)
    main = acc.is_main_process
    if main and not resume:
        write_manifest(run_dir, recipe, acc, recipe_path)
    say = say if main else (lambda *a, **k: None)
    task = construct(get("task", recipe.data.task), "data.params", **recipe.data.params)
    train_rows, test_rows = load_splits(recipe.data, task, recipe.train.seed)
    reward_fns = [RewardFn(spec, i, run_dir) for i, spec in enumerate(recipe.rewards)]
    check_columns(reward_fns, train_rows[0])
    check_modality(recipe, train_rows)
    base_path = resolve_path(recipe.model)
    tokenizer = load_tokenizer(recipe.model, base_path)
    chat = recipe.model.chat_template
    ctx = SimpleNamespace(recipe=recipe, accelerator=acc, task=task, tokenizer=tokenizer, say=say,
                          run_dir=run_dir, train_rows=train_rows, test_rows=test_rows, reward_fns=reward_fns,
                          train_prompts=format_prompts(tokenizer, [task.prompt(r) for r in train_rows], chat, train_rows),
                          test_prompts=format_prompts(tokenizer, [task.prompt(r) for r in test_rows], chat, test_rows),
                          format=lambda texts, rows=None: format_prompts(tokenizer, texts, chat, rows),
                          generator=make_generator(recipe, task))
    say(f"run directory: {run_dir}" + (f" (resuming from {resume_from.name})" if resume_from else
                                        " (resuming)" if resume else ""))
    if tool_sandbox(recipe) == "unsafe_local":
        say("warning: the python tool runs model-written code WITHOUT isolation (sandbox: unsafe_local)")
    rm_scores = {}
    for i, stage in enumerate(recipe.stages):
        if stage.kind == "rm":
            if main and not resume:
                with StepProgress("rm", stage.steps or 0, ("rm_loss",), enabled=main) as bar:
                    rm_scores[f"stages[{i}]"] = run_rm(recipe, stage, i, run_dir, task, train_rows, test_rows,
                                                       acc.device, log=bar.update, say=say)
            acc.wait_for_everyone()
        if stage.kind == "sft":
            base_path = str(run_dir / "sft-model")
            if main and not resume:
                with StepProgress("sft", stage.steps or 0, ("sft_loss",), enabled=main) as bar:
                    run_sft(recipe, stage, resolve_path(recipe.model), tokenizer, task, train_rows,
                            ctx.train_prompts, base_path, acc.device, log=bar.update, format_fn=ctx.format)
            acc.wait_for_everyone()
    summary = {"run_dir": str(run_dir), "eval": {}, "status": "failed",
               **({"reward_model": rm_scores} if rm_scores else {})}
    ctx.trackers = tracking.Trackers(recipe, run_dir, enabled=main)   # opened here: closed in `finally`
    try:
        if any(s.kind == "rl" for s in recipe.stages):
            summary["eval"] = rl_stage(ctx, base_path, resume_from)
        for i, stage in enumerate(recipe.stages):
            if stage.kind == "practice" and main:   # LLM calls, not gradients: one process
                summary["eval"] = run_practice(ctx, stage, i, resuming=bool(resume))
        acc.wait_for_everyone()
        summary["status"] = "finished"
    except TrainingStopped as stop:
        summary["status"] = f"stopped: {stop}"
        raise
    finally:
        try:
            if main:
                (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
                plots.draw(run_dir)
        finally:   # trackers are closed even if the plot fails
            ctx.trackers.finish(summary)
    acc.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # an exiting process that still holds its process group (gloo's threads) can abort in C++
        # teardown ("terminate called without an active exception"), failing a finished run
        torch.distributed.destroy_process_group()
    return summary
