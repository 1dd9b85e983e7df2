"""`rlrecipes train`: set up a run directory, data, model and components, then run the stages.

Run directory: runs/<name>-<YYYYmmdd-HHMMSS>/ with recipe.yaml, manifest.json, metrics.jsonl,
sft-model/ (after an SFT stage), final/ (the trained adapter or model) and summary.json.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from .config import to_dict
from .errors import UserError
from .evaluate import evaluate
from .model import Reference, load_policy, load_tokenizer, resolve_path, save_pretrained
from .progress import StepProgress
from .registry import get
from .rewards.combine import RewardFn, check_columns
from .rollout.generate import generate
from .sft import run_sft
from .tasks import load_splits
from .trainer import Components, lr_lambda, rl_step


def format_prompts(tokenizer, texts: list[str], chat_template: bool) -> list[str]:
    if not chat_template:
        return texts
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                          add_generation_prompt=True) for t in texts]


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


def write_manifest(run_dir: Path, recipe, accelerator) -> None:
    import importlib.metadata as md
    versions = {}
    for pkg in ("rlrecipes", "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    manifest = {"command": sys.argv, "python": platform.python_version(), "versions": versions,
                "seed": recipe.train.seed, "device": str(accelerator.device),
                "processes": accelerator.num_processes}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False))


def run_eval(ctx, model, label: str) -> dict:
    r, acc = ctx.recipe, ctx.accelerator
    rows = ctx.test_rows[:r.eval.limit] if r.eval.limit else ctx.test_rows
    prompts = ctx.test_prompts[:len(rows)]
    mine = slice(acc.process_index, None, acc.num_processes)
    gen = r.generation.model_copy(update={"temperature": r.eval.temperature or r.generation.temperature})
    result = evaluate(acc.unwrap_model(model), ctx.tokenizer, ctx.task, rows[mine], prompts[mine],
                      r.eval.samples, gen, acc.device, r.eval.k)
    if acc.num_processes > 1:  # re-weight the per-rank means by problem count
        from accelerate.utils import gather_object
        parts = gather_object([result])
        total = sum(p["problems"] for p in parts)
        result = {k: sum(p[k] * p["problems"] for p in parts) / total if k != "problems" else total
                  for k in parts[0]}
    ctx.say(f"eval {label}: " + ", ".join(f"{k}={v:.3f}" for k, v in result.items()
                                          if k.startswith(("pass@", "mean@")) and not k.endswith("_ci")))
    return result


def train(recipe, output_dir: str | None = None, say=print) -> dict:
    """Run every stage of `recipe`; returns the summary also written to summary.json."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    acc = Accelerator(cpu=not torch.cuda.is_available())  # cpu=True lets torchrun on CPU use gloo
    if recipe.train.prompts_per_step % acc.num_processes:
        raise UserError("train.prompts_per_step", f"{recipe.train.prompts_per_step} prompts do not split "
                        f"evenly over {acc.num_processes} processes", "make it a multiple of the process count")
    set_seed(recipe.train.seed)
    run_dir = make_run_dir(recipe, output_dir, acc)
    main = acc.is_main_process
    if main:
        write_manifest(run_dir, recipe, acc)
    say = say if main else (lambda *a, **k: None)
    task = get("task", recipe.data.task)(**recipe.data.params)
    train_rows, test_rows = load_splits(recipe.data, task, recipe.train.seed)
    reward_fns = [RewardFn(spec, i) for i, spec in enumerate(recipe.rewards)]
    check_columns(reward_fns, train_rows[0])
    base_path = resolve_path(recipe.model)
    tokenizer = load_tokenizer(recipe.model, base_path)
    chat = recipe.model.chat_template
    ctx = SimpleNamespace(recipe=recipe, accelerator=acc, task=task, tokenizer=tokenizer, say=say,
                          train_rows=train_rows, test_rows=test_rows, reward_fns=reward_fns,
                          train_prompts=format_prompts(tokenizer, [task.prompt(r) for r in train_rows], chat),
                          test_prompts=format_prompts(tokenizer, [task.prompt(r) for r in test_rows], chat))
    say(f"run directory: {run_dir}")
    for stage in recipe.stages:
        if stage.kind == "sft":
            base_path = str(run_dir / "sft-model")
            if main:
                with StepProgress("sft", stage.steps or 0, ("sft_loss",), enabled=main) as bar:
                    run_sft(recipe, stage, resolve_path(recipe.model), tokenizer, task, train_rows,
                            ctx.train_prompts, base_path, acc.device, log=bar.update)
            acc.wait_for_everyone()
    summary = {"run_dir": str(run_dir), "eval": {}}
    if any(s.kind == "rl" for s in recipe.stages):
        summary["eval"] = rl_stage(ctx, base_path, run_dir)
    summary["status"] = "finished"
    if main:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    acc.wait_for_everyone()
    return summary


def rl_stage(ctx, base_path: str, run_dir: Path) -> dict:
    r, acc = ctx.recipe, ctx.accelerator
    model, _ = load_policy(r.model, acc.device, base_path)
    ctx.comp = Components(r, len(ctx.train_rows))
    evals = {}
    if r.eval.at_start:
        evals["start"] = run_eval(ctx, model, "start")
    ctx.params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(ctx.params, lr=r.train.lr, betas=tuple(r.train.betas),
                                  weight_decay=r.train.weight_decay)
    ctx.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(r.train))
    ctx.model, ctx.optimizer = acc.prepare(model, optimizer)
    ctx.reference = Reference(acc.unwrap_model(ctx.model), r.model.adapter) if ctx.comp.needs_ref else None
    ctx.generate = lambda prompts, repeat: generate(acc.unwrap_model(ctx.model), ctx.tokenizer, prompts,
                                                    r.generation, acc.device, repeat)
    shown = ("reward_mean", "loss", "kl", "completion_len")
    log = open(run_dir / "metrics.jsonl", "a") if acc.is_main_process else None
    try:
        with StepProgress("rl", r.train.steps, shown, enabled=acc.is_main_process) as bar:
            for step in range(1, r.train.steps + 1):
                metrics = rl_step(ctx, step)
                if r.eval.every and step % r.eval.every == 0 and step < r.train.steps:
                    metrics.update({f"eval/{k}": v for k, v in run_eval(ctx, ctx.model, f"step {step}").items()})
                if log:
                    log.write(json.dumps({"step": step, **metrics}) + "\n")
                    log.flush()
                bar.update(step, metrics)
    finally:
        if log:
            log.close()
        if acc.is_main_process:
            save_pretrained(acc.unwrap_model(ctx.model), ctx.tokenizer, run_dir / "final")
    if r.eval.at_end:
        evals["end"] = run_eval(ctx, ctx.model, "end")
    if acc.num_processes > 1:  # lets a user (and the tests) confirm that the ranks agree
        (run_dir / f"rank-{acc.process_index}.json").write_text(
            json.dumps({"trainable_checksum": weight_checksum(ctx.params)}))
    return evals


def weight_checksum(params) -> str:
    import hashlib
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()
