"""What the `fast` engine's decode loop reads (`rlrecipes/rollout/decode.py`): the effective
weight of every projection of a Qwen2/Llama-architecture model, taken once per policy update.

Plain layers are used in place (a full fine-tune costs no copy); LoRA layers are merged into a
generation copy (W + s·BA; the training weights are untouched); 4-bit layers (QLoRA) are
dequantised once into that copy, in their compute dtype, instead of at every token. The copy is
cached on the model until a trainable parameter changes (`Tensor._version`, bumped by the
optimizer).
"""
from __future__ import annotations

import torch

from ..model import lora_layer_type, unwrapped


def effective_linear(mod, dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(effective weight [out, in], bias) of a Linear, a bitsandbytes Linear4bit or a peft LoRA
    layer around either; plain weights are returned as they are (no copy). A 4-bit layer is
    dequantised into `dtype` (its compute dtype), and so is its bias. A LoRA update is added in
    the base's dtype: with bf16 an update smaller than half a bf16 step of a weight rounds away
    there (peft's own forward adds the LoRA path in float32), so early in training the sampler's
    policy can differ slightly from the trained one, as with any merged-weight generator."""
    lora_layer = lora_layer_type()
    if lora_layer is not None and isinstance(mod, lora_layer):
        weight, bias = effective_linear(mod.get_base_layer(), dtype)
        if not mod.disable_adapters and not mod.merged:
            for name in mod.active_adapters:
                if name in mod.lora_A:
                    weight = weight + mod.get_delta_weight(name).to(weight.dtype)
        return weight, bias
    if type(mod).__name__ == "Linear4bit":
        import bitsandbytes.functional as bnbf
        weight = bnbf.dequantize_4bit(mod.weight.data, mod.weight.quant_state).to(dtype)
        return weight, None if mod.bias is None else mod.bias.to(dtype)
    return mod.weight, mod.bias


def compute_dtype(base, default: torch.dtype) -> torch.dtype:
    """The dtype 4-bit layers compute in (bitsandbytes' `compute_dtype`, the recipe's dtype),
    else `default`. QLoRA models keep embeddings, norms and head in float32 (peft's
    `prepare_model_for_kbit_training`); taking their dtype for the dequantised copy would double
    its memory and the bytes read per decoded token."""
    for m in base.modules():
        if type(m).__name__ == "Linear4bit" and getattr(m, "compute_dtype", None) is not None:
            return m.compute_dtype
    return default


class Weights:
    """The tensors one decode step reads, taken from a (peft-wrapped) Qwen2/Llama model."""

    def __init__(self, model):
        base = unwrapped(model)
        inner, cfg = base.model, base.config
        self.dtype = inner.embed_tokens.weight.dtype      # the residual stream's, as in the model's forward
        linear = compute_dtype(base, self.dtype)           # the projections' (QLoRA: bf16 on a GPU)
        self.embed = inner.embed_tokens.weight
        self.layers = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            self.layers.append({   # separate matmuls: fusing q/k/v would copy plain weights too
                **{k: effective_linear(getattr(att, f"{k}_proj"), linear) for k in "qkvo"},
                **{k: effective_linear(getattr(mlp, f"{k}_proj"), linear) for k in ("gate", "up", "down")},
                "ln1": (layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                "ln2": (layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)})
        self.norm = (inner.norm.weight, inner.norm.variance_epsilon)
        self.lm_head = effective_linear(base.lm_head, self.dtype)[0]
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rotary = inner.rotary_emb
        self.inv_freq, self.rope_scale = rotary.inv_freq.float(), float(getattr(rotary, "attention_scaling", 1.0))


def weights_of(model) -> Weights:
    """`Weights(model)`, cached on the model until a trainable parameter changes in place. Not
    cached for an FSDP-sharded model: its whole parameters exist only inside `sharding.gathered`."""
    from ..sharding import is_sharded
    if is_sharded(model):
        return Weights(model)
    version = tuple(p._version for p in model.parameters() if p.requires_grad)
    cached = getattr(model, "_rlrecipes_fast_weights", None)
    if cached is None or cached[0] != version:
        cached = (version, Weights(model))
        object.__setattr__(model, "_rlrecipes_fast_weights", cached)
    return cached[1]
