"""The RL stage's outer loop: steps, periodic eval, best tracking, checkpoints, resume, signals.

The math of one step lives in trainer.py; this file decides when to evaluate, save and stop.
"""
from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path

import torch

from . import checkpoint, sharding
from .errors import UserError
from .evaluate import evaluate, summarize
from .model import Reference, load_base, load_policy, load_weights, save_pretrained
from .progress import StepProgress
from .trainer import Components, lr_lambda, rl_step


class TrainingStopped(Exception):
    """The run stopped early but cleanly (signal, non-finite loss); a checkpoint was saved."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run_eval(ctx, model, label: str) -> dict:
    """Evaluate on the test split; each process takes a share of the problems, and the
    per-problem values are gathered so the intervals are those of the whole set."""
    r, acc = ctx.recipe, ctx.accelerator
    rows = ctx.test_rows[:r.eval.limit] if r.eval.limit else ctx.test_rows
    prompts = ctx.test_prompts[:len(rows)]
    mine = slice(acc.process_index, None, acc.num_processes)
    gen = r.generation.model_copy(update={"temperature": r.eval.temperature or r.generation.temperature})
    with sharding.gathered(acc.unwrap_model(model)) as whole:
        values = evaluate(whole, ctx.tokenizer, ctx.task, rows[mine], prompts[mine],
                          r.eval.samples, gen, acc.device, r.eval.k, generate_fn=ctx.generator, format_fn=ctx.format)
        extra = getattr(getattr(ctx, "comp", None), "sampler", None)
        if hasattr(extra, "evaluate"):  # a sampler's own per-problem eval values (anytime accuracy)
            values.update(extra.evaluate(whole, ctx.tokenizer, ctx.task, rows[mine], prompts[mine], r.eval.samples,
                                         gen, acc.device, ctx.generator))
    if acc.num_processes > 1:
        from accelerate.utils import gather_object
        parts = gather_object([values])
        values = {k: [v for part in parts for v in part[k]] for k in values}
    result = {**summarize(values), "samples": r.eval.samples}
    ctx.say(f"eval {label}: " + ", ".join(f"{k}={v:.3f}" for k, v in result.items()
                                          if k.startswith(("pass@", "mean@", "plcc", "srcc")) and not k.endswith("_ci")))
    return result


class GracefulStop:
    """SIGINT/SIGTERM ask the loop to stop after the current step (and save); a second SIGINT
    aborts at once."""

    def __enter__(self):
        self.signum = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def agreed(self, accelerator) -> int:
        """The signal any process received (0 if none), the same on every process, so that all
        of them stop at the same step and meet in the checkpoint's barrier."""
        if accelerator.num_processes == 1:
            return self.signum or 0
        flag = torch.tensor([self.signum or 0], device=accelerator.device)
        return int(accelerator.gather(flag).max().item())

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def setup_rl(ctx, base_path: str, resume_from: Path | None = None):
    """Policy (with a resumed run's weights), optimizer, scheduler, components and reference;
    DDP through accelerate, or FSDP2 (`rlrecipes/sharding.py`) when the launcher asks for it."""
    r, acc = ctx.recipe, ctx.accelerator
    ctx.sharded = sharding.requested()
    # FSDP2: whole models stay on the CPU (memory-mapped); `shard` moves each layer's shards to the device
    model, _ = load_policy(r.model, acc.device, base_path, on_cpu=ctx.sharded)
    ctx.comp = Components(r, len(ctx.train_rows))
    if ctx.comp.needs_ref:   # before resumed weights
        fresh = load_base(r.model, acc.device, base_path, on_cpu=True) \
            if ctx.sharded and r.model.adapter == "none" else None
        ctx.reference = Reference(model, r.model.adapter, copy_of=fresh)
    else:
        ctx.reference = None
    if resume_from:
        load_weights(model, resume_from / "model")
    if ctx.sharded:
        if ctx.comp.lr_scalers:
            raise UserError("algorithm", "a component that rescales the learning rate from whole gradients "
                            "(lr_scale) does not run sharded yet", "run it without FSDP (DDP)")
        for m in [model] + ([ctx.reference.copy] if ctx.reference and ctx.reference.copy is not None else []):
            sharding.shard(m, acc.device.type, acc.num_processes)
    if ctx.sharded or acc.num_processes > 1:
        ctx.say(f"distributed: {'fsdp2' if ctx.sharded else 'ddp'}, {acc.num_processes} "
                f"process{'es' if acc.num_processes > 1 else ''}")
    ctx.params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(ctx.params, lr=r.train.lr, betas=tuple(r.train.betas),
                                  weight_decay=r.train.weight_decay)
    ctx.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(r.train))
    ctx.model, ctx.optimizer = (model, optimizer) if ctx.sharded else acc.prepare(model, optimizer)

    def generate(prompts, repeat, max_new_tokens=None):   # a shorter cap: e.g. budget summaries
        gen = r.generation if max_new_tokens is None else r.generation.model_copy(
            update={"max_new_tokens": max_new_tokens})
        with sharding.gathered(acc.unwrap_model(ctx.model)) as whole:
            return ctx.generator(whole, ctx.tokenizer, prompts, gen, acc.device, repeat)
    ctx.generate = generate


def save_checkpoint(ctx, step: int, state: dict) -> Path:
    r, acc = ctx.recipe, ctx.accelerator
    path = checkpoint.step_dir(ctx.run_dir, step)
    rng = [checkpoint.rng_state()]
    if acc.num_processes > 1:  # every rank's generator state, so that each resumes where it was
        from accelerate.utils import gather_object
        rng = gather_object(rng)
    model_sd, staged = None, None
    if ctx.sharded:   # the optimizer as each rank's shards, into a folder rank 0 makes; the weights gathered
        staged = checkpoint.staging(ctx.run_dir, step) if acc.is_main_process else \
            checkpoint.staging_path(ctx.run_dir, step)
        acc.wait_for_everyone()   # the folder exists before any rank writes into it
        sharding.save_optimizer(ctx.model, ctx.optimizer, staged / sharding.OPTIMIZER_DIR)
        model_sd = sharding.full_state(ctx.model)
    if acc.is_main_process:
        path = checkpoint.save(ctx.run_dir, step, acc.unwrap_model(ctx.model), ctx.optimizer,
                               ctx.scheduler, ctx.comp.stateful(), state, r.checkpoint.keep_last, rng=rng,
                               model_state=model_sd, staged=staged)
    acc.wait_for_everyone()
    return path


def rl_stage(ctx, base_path: str, resume_from: Path | None) -> dict:
    r, acc, run_dir = ctx.recipe, ctx.accelerator, ctx.run_dir
    setup_rl(ctx, base_path, resume_from)
    state, start = {"best": None, "best_step": None, "eval_start": None}, 0
    if resume_from:  # the weights were loaded by setup_rl, before any sharding
        state = checkpoint.load(resume_from, acc.unwrap_model(ctx.model), ctx.optimizer, ctx.scheduler,
                                ctx.comp.stateful(), rank=acc.process_index, weights=False)
        start = state.pop("step")
        if acc.is_main_process:
            truncate_metrics(run_dir, start)
    elif r.eval.at_start:
        state["eval_start"] = run_eval(ctx, ctx.model, "start")
        log_line(ctx, {"step": 0, **{f"eval/{k}": v for k, v in state["eval_start"].items()}})
    streak, saved = 0, None
    with GracefulStop() as stop, StepProgress("rl", r.train.steps, ("reward_mean", "loss", "kl", "completion_len"),
                                              enabled=acc.is_main_process) as bar:
        bar.update(start, {})
        ctx.note = bar.note
        for step in range(start + 1, r.train.steps + 1):
            metrics = rl_step(ctx, step)
            streak = streak + 1 if metrics["skipped_updates"] == metrics["updates"] else 0
            improved = False
            if r.eval.every and step % r.eval.every == 0 and step < r.train.steps:
                result = run_eval(ctx, ctx.model, f"step {step}")
                metrics.update({f"eval/{k}": v for k, v in result.items()})
                improved = update_best(r, state, metrics, step)
            log_line(ctx, {"step": step, **metrics})
            bar.update(step, metrics)
            halt = streak >= r.train.max_skipped_steps
            signum = stop.agreed(acc)
            if improved or halt or signum or (r.checkpoint.every and step % r.checkpoint.every == 0):
                saved = save_checkpoint(ctx, step, state)
                if improved and acc.is_main_process:
                    checkpoint.mark_best(run_dir, saved)
            if halt:
                raise TrainingStopped(f"step {step}: loss or gradient not finite for {streak} consecutive "
                                      f"steps (updates skipped); checkpoint {saved}", 3)
            if signum:
                name = signal.Signals(signum).name
                raise TrainingStopped(f"{name} at step {step}: saved {saved}; resume with: rlrecipes train "
                                      f"RECIPE --resume {run_dir}", 128 + signum)
    evals = {"start": state["eval_start"]} if state["eval_start"] else {}
    improved = False
    if r.eval.at_end:
        evals["end"] = run_eval(ctx, ctx.model, "end")
        metrics = {f"eval/{k}": v for k, v in evals["end"].items()}
        log_line(ctx, {"step": r.train.steps, **metrics})
        improved = update_best(r, state, metrics, r.train.steps)
    final = checkpoint.step_dir(run_dir, r.train.steps)
    if saved != final or improved:  # the last step's checkpoint, unless the loop just wrote it
        final = save_checkpoint(ctx, r.train.steps, state)
    model_sd = sharding.full_state(ctx.model) if ctx.sharded else None
    if acc.is_main_process:
        if improved:
            checkpoint.mark_best(run_dir, final)
        save_pretrained(acc.unwrap_model(ctx.model), ctx.tokenizer, run_dir / "final", state_dict=model_sd)
    if acc.num_processes > 1:  # lets a user (and the tests) confirm that the ranks agree
        (run_dir / f"rank-{acc.process_index}.json").write_text(
            json.dumps({"trainable_checksum": weight_checksum(sharding.whole(p) for p in ctx.params)}))
    return evals


def update_best(recipe, state: dict, metrics: dict, step: int) -> bool:
    """Track checkpoint.best_metric; True when this step is the new best."""
    key = recipe.checkpoint.best_metric
    if not key or key not in metrics:
        return False
    value, best = metrics[key], state["best"]
    better = best is None or (value > best if recipe.checkpoint.best_mode == "max" else value < best)
    if better:
        state["best"], state["best_step"] = value, step
    return better


def log_line(ctx, row: dict) -> None:
    if ctx.accelerator.is_main_process:
        with open(ctx.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if getattr(ctx, "trackers", None):
            ctx.trackers.log(row)


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric lines after `step`: they belong to the part of the run being redone."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))


def weight_checksum(params) -> str:
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()
