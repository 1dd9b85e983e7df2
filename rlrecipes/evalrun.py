"""`rlrecipes eval`: evaluate a run's checkpoint (or a recipe's untrained model) on a split.

TARGET is a run directory (its recipe.yaml is used) or a recipe file. --checkpoint picks
latest | best | final | step-000050 | base (the model with no adapter: the SFT model of a run,
or the recipe's model). --compare base also evaluates `base` on the same problems and reports
the paired gain with its interval.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import checkpoint
from .config import load_recipe
from .errors import UserError
from .evaluate import CORPUS_INPUTS, evaluate, mean_ci, summarize
from .model import load_policy, load_weights, resolve_path
from .registry import construct, get
from .rollout.multiturn import make_generator
from .run import format_prompts
from .tasks import load_splits


def resolve_target(target: Path, preset, overrides) -> tuple[object, Path | None]:
    """(recipe, run_dir or None)."""
    if target.is_dir():
        saved = checkpoint.run_recipe_path(target)
        if preset:
            raise UserError("--preset", "a run's recipe.yaml is already resolved; --preset is for recipe files")
        return load_recipe(saved, None, overrides), target
    return load_recipe(target, preset, overrides), None


def checkpoint_dir(run_dir: Path | None, name: str) -> Path | None:
    """The weights folder for --checkpoint NAME; None means the base model."""
    if name == "base":
        return None
    if run_dir is None:
        raise UserError("--checkpoint", f"{name!r} needs a run directory as TARGET",
                        "a recipe file can only be evaluated with --checkpoint base")
    if name == "latest":
        found = checkpoint.latest_checkpoint(run_dir)
        if found is None:
            raise UserError(str(run_dir), "no complete checkpoint", "use --checkpoint final or base")
        return found / "model"
    if name == "final":
        path = run_dir / "final"
    else:
        path = run_dir / "checkpoints" / name / "model"
    if not path.exists():
        options = ["latest", "final", "base"] + [p.name for p in checkpoint.complete_checkpoints(run_dir)]
        if (run_dir / "checkpoints" / "best").exists():
            options.append("best")
        raise UserError("--checkpoint", f"no checkpoint {name!r} in {run_dir}", "valid: " + ", ".join(options))
    return path


def load_run_policy(recipe, run_dir: Path | None, weights: Path | None, device):
    """(policy, tokenizer, model config, base path) as a run's checkpoint `weights` holds it:
    the run's SFT model (else the recipe's model) with the adapter or full weights loaded;
    `weights` None: the base alone. Shared by `eval` and `export`."""
    base_path = str(run_dir / "sft-model") if run_dir and (run_dir / "sft-model").is_dir() else resolve_path(recipe.model)
    model_cfg = recipe.model if weights is None or (weights / "adapter_config.json").exists() \
        else recipe.model.model_copy(update={"adapter": "none"})
    model, tokenizer = load_policy(model_cfg, device, base_path)
    if weights is not None:
        load_weights(model, weights)
    return model, tokenizer, model_cfg, base_path


def run_eval_command(target: Path, checkpoint_name: str, preset, overrides, samples, ks, split, limit,
                     compare: str | None) -> dict:
    recipe, run_dir = resolve_target(target, preset, overrides)
    weights = checkpoint_dir(run_dir, checkpoint_name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = construct(get("task", recipe.data.task), "data.params", **recipe.data.params)
    train_rows, test_rows = load_splits(recipe.data, task, recipe.train.seed)
    rows = test_rows if split == "test" else train_rows
    rows = rows[:limit] if limit else rows
    model, tokenizer, model_cfg, base_path = load_run_policy(recipe, run_dir, weights, device)
    prompts = format_prompts(tokenizer, [task.prompt(r) for r in rows], recipe.model.chat_template, rows)
    samples = samples or recipe.eval.samples
    ks = ks or [k for k in recipe.eval.k if k <= samples] or [1]  # the recipe's k that fit --samples
    bad = [k for k in ks if not 1 <= k <= samples]
    if bad:
        raise UserError("--k", f"k={bad[0]} must be between 1 and --samples={samples}")
    gen = recipe.generation.model_copy(update={"temperature": recipe.eval.temperature or recipe.generation.temperature})
    generator = make_generator(recipe, task)
    sampler = get("sampler", recipe.algorithm.sampler.fn)   # one with its own eval (anytime accuracy)
    if hasattr(sampler, "evaluate"):
        sampler = construct(sampler, "algorithm.sampler", num_rows=len(rows), seed=recipe.train.seed,
                            **recipe.algorithm.sampler.params)

    def judge(m) -> dict[str, list[float]]:
        torch.manual_seed(recipe.train.seed)  # the same sampling noise for both sides of a comparison
        values = evaluate(m, tokenizer, task, rows, prompts, samples, gen, device, ks, generate_fn=generator,
                          format_fn=lambda texts, rws=None: format_prompts(tokenizer, texts, recipe.model.chat_template, rws))
        if hasattr(sampler, "evaluate"):
            values.update(sampler.evaluate(m, tokenizer, task, rows, prompts, samples, gen, device, generator))
        return values

    values = judge(model)
    result = {"checkpoint": checkpoint_name, "split": split, **summarize(values), "samples": samples}
    if compare == "base":
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                base_values = judge(model)
        else:  # a full fine-tune: reload the base weights
            base_values = judge(load_policy(model_cfg, device, base_path)[0])
        result["base"] = {**summarize(base_values), "samples": samples}
        result["gain"] = {}
        for name, vals in values.items():
            if name in CORPUS_INPUTS:
                continue
            mean, ci = mean_ci([a - b for a, b in zip(vals, base_values[name])])
            result["gain"][name], result["gain"][f"{name}_ci"] = mean, ci
        for name in ("plcc", "srcc"):  # corpus metrics: the difference only, no paired interval
            if name in result:
                result["gain"][name] = result[name] - result["base"][name]
    if run_dir is not None:
        out = run_dir / "eval" / f"{checkpoint_name}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        result["written"] = str(out)
    return result
