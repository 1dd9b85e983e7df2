"""`rlrecipes export RUN_DIR --merge OUT_DIR`: a run's trained policy as a plain Hugging Face folder.

The policy is loaded exactly as `rlrecipes eval` loads it (the base, or the run's SFT model,
with the checkpoint's adapter or full weights). Then:
- full fine-tune: its weights as they are;
- LoRA: every adapted linear layer's weight replaced by W + s·BA (peft's delta), the adapter
  dropped;
- QLoRA: every 4-bit layer de-quantised (the values the policy computed with, not the original
  float weights) plus its LoRA delta, in the recipe's compute dtype.
The result is the base architecture with no peft or bitsandbytes in it: `AutoModelForCausalLM
.from_pretrained(OUT_DIR)` (and `vllm serve OUT_DIR`) read it, with the tokenizer beside it. It is
written into a temporary folder next to OUT_DIR and renamed into place, so an interrupted export
leaves no half-written OUT_DIR.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .errors import UserError


def merged_model(policy, cfg, base_path: str, device):
    """The policy as a plain transformers model (a new one for lora/qlora)."""
    if cfg.adapter == "none":
        return policy
    from .model import load_base
    from .rollout.engine import effective_linear
    base = policy.get_base_model()
    plain = load_base(cfg.model_copy(update={"gradient_checkpointing": False}), device, base_path, quantize=False)
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


def export(run_dir: Path, out_dir: Path, checkpoint_name: str = "final") -> dict:
    """Write the merged policy of `run_dir` to `out_dir`; returns what was written."""
    from .evalrun import checkpoint_dir, resolve_target
    from .model import load_policy, load_weights, save_pretrained
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError("--merge", f"{out_dir} exists and is not an empty folder", "choose a new folder, or remove it")
    if not run_dir.is_dir():
        raise UserError(str(run_dir), "not a run directory", "pass a folder that `rlrecipes train` wrote")
    recipe, _ = resolve_target(run_dir, None, [])
    weights = checkpoint_dir(run_dir, checkpoint_name)
    if weights is None:
        raise UserError("--checkpoint", "base has nothing to merge", "export final, latest, best or a step")
    from .model import resolve_path
    base_path = str(run_dir / "sft-model") if (run_dir / "sft-model").is_dir() else resolve_path(recipe.model)
    cfg = recipe.model if (weights / "adapter_config.json").exists() else recipe.model.model_copy(update={"adapter": "none"})
    device = torch.device("cpu")
    policy, tokenizer = load_policy(cfg, device, base_path)
    load_weights(policy, weights)
    model = merged_model(policy, cfg, base_path, device)
    tmp = out_dir.parent / f".tmp-export-{out_dir.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_pretrained(model, tokenizer, tmp)
        info = {"run_dir": str(run_dir), "checkpoint": str(weights), "adapter": cfg.adapter, "base": base_path,
                "dtype": str(model.dtype).removeprefix("torch.")}
        (tmp / "rlrecipes_export.json").write_text(json.dumps(info, indent=2))
        if out_dir.exists():
            out_dir.rmdir()   # empty, checked above
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info
