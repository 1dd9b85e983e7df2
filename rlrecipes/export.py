"""`rlrecipes export RUN_DIR --merge OUT_DIR`: a run's trained policy as a plain Hugging Face folder.

The policy is loaded exactly as `rlrecipes eval` loads it (the base, or the run's SFT model
`sft-model/` when the run had an SFT stage, with the checkpoint's adapter or full weights). Then:
- full fine-tune: its weights as they are, in the checkpoint's own dtype;
- LoRA: every adapted linear layer's weight replaced by W + s·BA (peft's delta), the adapter
  dropped;
- QLoRA: every 4-bit layer de-quantised (the values the policy computed with, not the original
  float weights) plus its LoRA delta.
Merged weights are added up in the recipe's compute dtype (float32 on CPU) and written in the
float dtype the base was stored in (`config.json` `dtype`), so a bfloat16 base exports as
bfloat16, as `merge_and_unload` on it would give, not twice its size.
The result is the base architecture with no peft or bitsandbytes in it: `AutoModelForCausalLM
.from_pretrained(OUT_DIR)` (and `vllm serve OUT_DIR`) read it, with the tokenizer and
generation config beside it. It is written into a temporary folder next to OUT_DIR and renamed
into place, so an interrupted export leaves no half-written OUT_DIR.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import UserError


def run_policy(run_dir: Path, checkpoint_name: str):
    """(policy, tokenizer, model config, base path, weights folder) of a run's checkpoint, on
    CPU, loaded as `rlrecipes eval` loads it; one-line errors for a folder with nothing to load."""
    from . import checkpoint
    from .evalrun import checkpoint_dir, load_run_policy, resolve_target
    if not run_dir.is_dir():
        raise UserError(str(run_dir), "not a run directory", "pass a folder that `rlrecipes train` wrote")
    recipe, _ = resolve_target(run_dir, None, [])
    if not (run_dir / "final").is_dir() and not checkpoint.complete_checkpoints(run_dir):
        raise UserError(str(run_dir), "no checkpoint to export (no final/, no checkpoints/step-*/)",
                        "it stopped before its first checkpoint: train it again")
    if checkpoint_name == "final" and not (run_dir / "final").is_dir():
        raise UserError(str(run_dir), "no final/ (the run did not finish)",
                        "export a checkpoint: --checkpoint latest, or resume the run")
    weights = checkpoint_dir(run_dir, checkpoint_name)
    if weights is None:
        raise UserError("--checkpoint", "base has nothing to merge", "export final, latest, best or a step")
    policy, tokenizer, cfg, base_path = load_run_policy(recipe, run_dir, weights, torch.device("cpu"))
    return policy, tokenizer, cfg, base_path, weights


def merged_model(policy, cfg, base_path: str):
    """The policy as a plain transformers model (a new one for lora/qlora)."""
    if cfg.adapter == "none":
        return policy
    from .model import load_base
    from .rollout.weights import effective_linear
    base = policy.get_base_model()
    plain = load_base(cfg.model_copy(update={"gradient_checkpointing": False}), torch.device("cpu"), base_path,
                      quantize=False)
    with torch.no_grad():
        for name, module in base.named_modules():
            kind = type(module).__name__
            if name.endswith(".base_layer") or not (hasattr(module, "lora_A") or kind == "Linear4bit"):
                continue
            weight, bias = effective_linear(module, plain.dtype)
            target = plain.get_submodule(name)
            target.weight.copy_(weight.to(target.weight.dtype))
            if bias is not None:
                target.bias.copy_(bias.to(target.bias.dtype))
    return plain


def saved_dtype(model, adapter: str, base_path: str, weights: Path) -> torch.dtype:
    """Full fine-tune: the dtype its checkpoint holds. Merged: the dtype the base was stored in
    (the model's own when the base's config names no float dtype)."""
    if adapter == "none":
        from safetensors import safe_open
        with safe_open(str(sorted(weights.glob("*.safetensors"))[0]), "pt") as f:
            return f.get_tensor(next(iter(f.keys()))).dtype
    config = json.loads((Path(base_path) / "config.json").read_text())
    stored = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or ""), None)
    return stored if isinstance(stored, torch.dtype) and stored.is_floating_point else model.dtype


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError("--merge", f"{out_dir} exists and is not an empty folder", "choose a new folder, or remove it")


def write_atomically(model, tokenizer, out_dir: Path, info: dict) -> None:
    """The merged model and `rlrecipes_export.json`, renamed into OUT_DIR in one step."""
    from .model import save_atomically
    save_atomically(model, tokenizer, out_dir, {"rlrecipes_export.json": info})


def export(run_dir: Path, out_dir: Path, checkpoint_name: str = "final") -> dict:
    """Write the merged policy of `run_dir` to `out_dir`; returns what was written."""
    check_out_dir(out_dir)
    policy, tokenizer, cfg, base_path, weights = run_policy(run_dir, checkpoint_name)
    dtype = saved_dtype(policy, cfg.adapter, base_path, weights)
    model = merged_model(policy, cfg, base_path).to(dtype)
    info = {"run_dir": str(run_dir), "checkpoint": str(weights), "adapter": cfg.adapter, "base": base_path,
            "dtype": str(dtype).removeprefix("torch.")}
    write_atomically(model, tokenizer, out_dir, info)
    return info
