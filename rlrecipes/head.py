"""Log-probs through the LM head: the chosen tokens' log-probs and entropies computed from the
head's input, with the head inside the blockwise log-softmax of `rlrecipes/logprobs.py`, so
the [N, T, V] logits and their gradient never exist whole (benchmarks/head_memory.py: at a
151,936-token vocabulary one training pass's peak memory 0.15-0.18x the logits path's).

`token_logprobs` (training, old and reference passes, with or without prefix sharing) and the
SFT stage's loss go through it where `fused_head` allows; everything else keeps the logits.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from . import logprobs


# Architectures whose output logits are the LM head's output unchanged (read in transformers 5's
# modeling files). Others may transform them after the head (Gemma 2/3 soft-cap them, Cohere and
# Granite scale them), which a path that never sees the logits would skip: they keep the logits.
# tests/test_head_architectures.py checks each against the installed transformers.
HEAD_IS_LAST = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi", "phi3",
                          "gemma", "olmo2", "smollm3", "starcoder2", "deepseek_v3", "qwen2_vl", "qwen2_5_vl"})


def fused_head(model):
    """The LM head `head_logprobs` can compute through: a plain `nn.Linear` (the model's own, or
    tied to the embeddings) with no hook on it and its forward not replaced, of a transformers
    model (not remote code) of an architecture in HEAD_IS_LAST; else None (callers take the
    logits path)."""
    from .model import unwrapped
    outer = getattr(model, "module", model)   # under DDP
    head, base = outer.get_output_embeddings(), unwrapped(outer)
    if type(head) is not torch.nn.Linear or "forward" in vars(head) or head._forward_hooks or head._forward_pre_hooks:
        return None
    if not type(base).__module__.startswith("transformers.models."):
        return None
    return head if getattr(base.config, "model_type", None) in HEAD_IS_LAST else None


@contextlib.contextmanager
def head_logprobs(model, ids_NT, temperature: float, entropy: str | None, pick):
    """Inside this context the model's LM head returns, instead of logits, the log-probs of
    `ids_NT` [N, T] (and their entropies) computed by `_HeadChosenLogSoftmax` from
    `pick(hidden)`, the head's input at the positions that predict them ([N, T, D] or [N*T, D]).
    The model's output `.logits` is then [N, T, 1 or 2]; the context yields the function that
    splits it into `chosen_logprobs`'s (logp_NT, entropy_NT or None). The head runs inside the
    model's forward, so DDP and FSDP2 see an ordinary forward and backward."""
    head = fused_head(model)
    N, T = ids_NT.shape

    def forward(hidden):
        h_MD = pick(hidden).reshape(N * T, -1)
        logp_M, entropy_M = _HeadChosenLogSoftmax.apply(h_MD, head.weight, head.bias, ids_NT.reshape(-1),
                                                        float(temperature), bool(entropy))
        if not entropy:
            return logp_M.view(N, T, 1)
        return torch.stack([logp_M, entropy_M if entropy == "grad" else entropy_M.detach()], -1).view(N, T, 2)

    head.forward = forward
    try:
        yield lambda out_NTk: (out_NTk[..., 0], out_NTk[..., 1] if entropy else None)
    finally:
        del head.forward


class _HeadChosenLogSoftmax(torch.autograd.Function):
    """`logprobs._ChosenLogSoftmax` with the LM head inside: from the head's input hidden [M, D] and its
    weight [V, D] (and bias), log p(chosen) and entropy per row, never holding the [M, V] logits
    or their gradient whole (with Qwen's 152k vocabulary, 2.3 GiB each in bf16 for 8,192 tokens).
    The forward computes the logits a block of rows at a time; the backward computes them again a
    block of the vocabulary at a time, over all rows, from the saved log-normalisers, and each
    block gives its rows of the weight gradient in one matmul and adds its share of the hidden
    states' gradient (summed in float32, [M, D]). The price is the head's matmul once more.

    Logits are computed as the model's forward computes them: in the autocast dtype when the
    forward runs under autocast (accelerate's `mixed_precision`), else in the head's dtype. That
    dtype is recorded and both passes cast to it explicitly, autocast off, so the backward's
    logits are the forward's whatever context the backward runs in. The vocabulary-sized work
    runs in float32."""

    @staticmethod
    def forward(ctx, hidden_MD, weight_VD, bias_V, ids_M, temperature: float, with_entropy: bool):
        M, V = hidden_MD.shape[0], weight_VD.shape[0]
        device = hidden_MD.device.type
        ctx.compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight_VD.dtype
        ctx.dtype = torch.promote_types(ctx.compute, torch.float32)
        logp_M = hidden_MD.new_empty(M, dtype=ctx.dtype)
        lse_M = torch.empty_like(logp_M)
        entropy_M = torch.empty_like(logp_M) if with_entropy else logp_M.new_empty(0)
        w, b = _cast(weight_VD, ctx.compute), _cast(bias_V, ctx.compute)
        rows = max(1, logprobs.BLOCK_ELEMENTS // V)
        with torch.autocast(device, enabled=False):
            for r in (slice(s, s + rows) for s in range(0, M, rows)):
                x = F.linear(hidden_MD[r].to(ctx.compute), w, b).to(ctx.dtype) / temperature
                lse_M[r], logp_M[r], ent = logprobs._block_stats(x, ids_M[r], with_entropy)
                if with_entropy:
                    entropy_M[r] = ent
        ctx.save_for_backward(hidden_MD, weight_VD, bias_V, ids_M, lse_M, entropy_M)
        ctx.temperature, ctx.with_entropy = temperature, with_entropy
        ctx.set_materialize_grads(False)
        return logp_M, entropy_M

    @staticmethod
    def backward(ctx, g_logp_M, g_entropy_M):
        hidden_MD, weight_VD, bias_V, ids_M, lse_M, entropy_M = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        M, V = hidden_MD.shape[0], weight_VD.shape[0]
        use_entropy = ctx.with_entropy and g_entropy_M is not None and g_entropy_M.numel() > 0
        g_logp_M = torch.zeros_like(lse_M) if g_logp_M is None else g_logp_M
        h, w, b = hidden_MD.to(ctx.compute), _cast(weight_VD, ctx.compute), _cast(bias_V, ctx.compute)
        grad_h = torch.zeros(hidden_MD.shape, dtype=ctx.dtype, device=hidden_MD.device) if need_h else None
        grad_w = torch.empty(weight_VD.shape, dtype=ctx.compute, device=weight_VD.device) if need_w else None
        grad_b = torch.empty(V, dtype=ctx.dtype, device=weight_VD.device) if need_b else None
        cols = max(1, logprobs.BLOCK_ELEMENTS // M)
        with torch.autocast(hidden_MD.device.type, enabled=False):
            for v in range(0, V, cols):
                c = slice(v, v + cols)
                x = F.linear(h, w[c], None if b is None else b[c]).to(ctx.dtype) / ctx.temperature
                hit = (ids_M >= v) & (ids_M < v + x.shape[1])
                g = logprobs._block_grad(x, (ids_M - v).clamp(0, x.shape[1] - 1), lse_M, entropy_M if use_entropy else None,
                                g_logp_M, g_entropy_M if use_entropy else None, ctx.temperature, hit)
                if need_b:
                    grad_b[c] = g.sum(0)
                g = g.to(ctx.compute)
                if need_h:
                    grad_h += (g @ w[c]).to(ctx.dtype)
                if need_w:
                    grad_w[c] = g.t() @ h
        return (None if grad_h is None else grad_h.to(hidden_MD.dtype),
                None if grad_w is None else grad_w.to(weight_VD.dtype),
                None if grad_b is None else grad_b.to(bias_V.dtype), None, None, None)


def _cast(t, dtype):
    return None if t is None else t.to(dtype)
