"""Load the policy and tokenizer; attach the adapter; give reference log-probs.

- `name_or_path`: a hub id or a local directory (Auto classes), or `tiny` (see tiny.py).
- `adapter`: none (full fine-tune; a frozen copy serves as the reference when KL is on),
  lora (peft), qlora (bitsandbytes 4-bit NF4 base + LoRA; works on CPU too).
- The reference policy of lora/qlora is the same model with the adapter disabled: no second copy.
- dtype auto: bf16 on CUDA, fp32 on CPU. `trust_remote_code` only when the recipe sets it.
- `model.vision`: an image-text-to-text model (Qwen2-VL family) with its image processor
  attached to the tokenizer (`vision.processor_of`). The vision tower is frozen unless
  `vision.train_tower`: LoRA skips it, QLoRA keeps it unquantised, a full fine-tune leaves it.
"""
from __future__ import annotations

import contextlib
import copy
import sys
from pathlib import Path

import torch

from .errors import UserError


def unwrapped(model):
    """The transformers model under a peft wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def lora_layer_type():
    """peft's LoraLayer class, or None when peft was never imported: then no model holds one,
    and a full fine-tune need not import peft (about 50 MB of resident memory)."""
    lora = sys.modules.get("peft.tuners.lora")   # loaded by any import of peft, and with every LoraLayer
    return None if lora is None else lora.LoraLayer


def resolve_path(cfg) -> str:
    if cfg.name_or_path == "tiny":
        from .tiny import tiny_path
        return str(tiny_path(vision=cfg.vision is not None, **cfg.tiny.model_dump()))
    return cfg.name_or_path


def _dtype(cfg, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


def load_tokenizer(cfg, path: str | None = None):
    from transformers import AutoTokenizer
    path = path or resolve_path(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code,
                                            revision=cfg.revision)
    except (OSError, ValueError) as exc:
        raise UserError("model.name_or_path", f"cannot load tokenizer from {path!r}: "
                        f"{str(exc).splitlines()[0]}", "a hub id needs the network; or give a local directory") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if cfg.vision is not None:
        from .vision import VisionProcessor
        tok.vision = VisionProcessor.load(path, tok, cfg.vision, cfg.trust_remote_code)
    return tok


def load_base(cfg, device: torch.device, path: str | None = None, quantize: bool = False,
              on_cpu: bool = False):
    """The plain causal LM (or image-text-to-text model with `model.vision`) from `path`
    (default: the recipe's model), optionally 4-bit NF4. `device` decides `dtype: auto`;
    `on_cpu` leaves the weights on the CPU, memory-mapped from the checkpoint's files where
    their dtype allows, for FSDP2 to move each layer's shards to `device` (`sharding.shard`)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, BitsAndBytesConfig
    from .vision import TOWER_NAMES
    path = path or resolve_path(cfg)
    dtype = _dtype(cfg, device)
    kwargs = dict(dtype=dtype, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    auto = AutoModelForCausalLM if cfg.vision is None else AutoModelForImageTextToText
    if quantize:
        # the vision tower stays in the compute dtype (as the Qwen2-VL QLoRA recipes do)
        skip = {"llm_int8_skip_modules": ["lm_head", *(rf"(?:.*\.)?{t}" for t in TOWER_NAMES)]} \
            if cfg.vision is not None else {}
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, **skip)
        # Always name the device: without a map, transformers puts a 4-bit model on CUDA
        # whenever one is present, even when the caller asked for the CPU.
        kwargs["device_map"] = {"": device}
    try:
        model = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError("model.name_or_path", f"cannot load model from {path!r}: "
                        f"{str(exc).splitlines()[0]}", "a hub id needs the network; or give a local directory") from exc
    if quantize:
        _keep_cpu_4bit_trainable(model)
    elif not on_cpu:
        model.to(device)
    if cfg.vision is not None and not cfg.vision.train_tower:
        from .vision import tower
        tower(model).requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _keep_cpu_4bit_trainable(model) -> None:
    # bitsandbytes 0.50 repacks 4-bit weights into a CPU inference layout on the first forward in
    # eval mode and never unpacks them; the next training forward then fails. Generation runs in
    # eval mode, so switch that repacking off.
    import bitsandbytes as bnb
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def attach_adapter(model, cfg):
    """Wrap `model` with a fresh LoRA adapter (lora/qlora); return it unchanged for `none`."""
    if cfg.adapter == "none":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    if cfg.adapter == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    exclude = None
    if cfg.vision is not None and not cfg.vision.train_tower:
        from .vision import TOWER_NAMES
        exclude = rf".*\b({'|'.join(TOWER_NAMES)})\..*"   # LoRA on the language model only
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM", exclude_modules=exclude)
    return get_peft_model(model, lora)


def load_policy(cfg, device: torch.device, path: str | None = None, on_cpu: bool = False):
    """(policy, tokenizer) ready for RL: the base at `path` with the recipe's adapter
    (`on_cpu`: see `load_base`)."""
    tokenizer = load_tokenizer(cfg, path)
    model = load_base(cfg, device, path, quantize=cfg.adapter == "qlora", on_cpu=on_cpu)
    return attach_adapter(model, cfg), tokenizer


class Reference:
    """Reference log-probs: adapter disabled for lora/qlora, a frozen copy for a full fine-tune."""

    def __init__(self, policy, adapter: str, copy_of=None):
        """`copy_of`: a fresh load of the base to use as the frozen copy (FSDP2: memory-mapped,
        the page cache shared by the ranks) instead of a deep copy of the policy (private
        memory on each rank)."""
        self.policy, self.copy = policy, None
        if adapter == "none":
            self.copy = (copy_of if copy_of is not None else copy.deepcopy(policy)).eval().requires_grad_(False)

    def context(self, model):
        """(model to run, context manager) for a reference forward pass."""
        if self.copy is not None:
            return self.copy, contextlib.nullcontext()
        return model, model.disable_adapter()


def save_pretrained(model, tokenizer, path: Path, state_dict: dict | None = None) -> None:
    """The model (adapter or full weights; `state_dict`: a sharded model's gathered weights) and
    tokenizer, as `from_pretrained` reads them."""
    model.save_pretrained(path, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(path)
    if getattr(tokenizer, "vision", None) is not None:   # a VLM's image processor goes with it
        tokenizer.vision.save_pretrained(path)


def save_atomically(model, tokenizer, out_dir: Path, files: dict[str, dict]) -> None:
    """`save_pretrained` plus JSON `files` into a temporary folder beside `out_dir`, fsynced, then
    renamed into place (an existing `out_dir` is replaced): a crash or a failed write leaves the
    old folder or none, never half a model. Used by `export` and the rm stage."""
    import json
    import os
    import shutil
    from .checkpoint import _fsync_tree
    out_dir = Path(out_dir)
    tmp, old = out_dir.parent / f".tmp-{out_dir.name}", out_dir.parent / f".old-{out_dir.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_pretrained(model, tokenizer, tmp)
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=2))
        _fsync_tree(tmp)
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def load_weights(model, path: Path) -> None:
    """Load weights written by `save_pretrained` back into a live model (adapter or full)."""
    from safetensors.torch import load_file
    path = Path(path)
    if (path / "adapter_model.safetensors").exists():
        from peft import set_peft_model_state_dict
        result = set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"adapter keys not in the model: {result.unexpected_keys[:3]}")
        return
    state = {}
    for shard in sorted(path.glob("*.safetensors")):
        state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {name for name in missing if name.endswith("lm_head.weight") and model.config.tie_word_embeddings}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {sorted(set(missing) - tied)[:3]}, "
                           f"unexpected {unexpected[:3]}")
