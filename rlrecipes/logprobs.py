"""Per-token log-probabilities (and entropies) of completions under a model.

The vocabulary-sized work (log-normaliser, chosen-token log-prob, entropy) runs in float32
over blocks of rows and keeps only the model's own logits (bf16 on GPU) for the backward pass,
which recomputes the softmax block by block. A plain `logits.float().log_softmax()` keeps
several float32 copies of a [N, T, V] tensor alive; with a 152k vocabulary that was most of
rlrecipes' GPU memory (benchmarks/gpu_check.sh, 0.5B model: 12.3 GiB against TRL's 5.3 GiB).

Where the model's LM head is a plain linear layer whose output is the model's logits
(`head.fused_head`), `token_logprobs` goes one step further and keeps no logits at all: the
head itself runs blockwise inside the same computation (`rlrecipes/head.py`), so neither the
[N, T, V] logits nor their gradient exist whole (benchmarks/head_memory.py). The logits path
remains for the last-layer extras (CAPO) and other heads.

A LoRA model with a half-precision base runs its forward under `adapter_autocast`.
"""
from __future__ import annotations

import contextlib

import torch


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` computes them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


BLOCK_ELEMENTS = 1 << 24  # float32 elements per block: 64 MiB of temporaries at a time


def _blocks(N: int, T: int, V: int):
    """(sequence slice, token slice) pairs covering [N, T] with about BLOCK_ELEMENTS * V each."""
    rows = max(1, BLOCK_ELEMENTS // V)
    if rows >= T:
        per = max(1, rows // T)
        for n in range(0, N, per):
            yield slice(n, n + per), slice(0, T)
    else:
        for n in range(N):
            for t in range(0, T, rows):
                yield slice(n, n + 1), slice(t, t + rows)


def _block_stats(x, ids, with_entropy: bool):
    """(log-normaliser, log p(chosen), entropy or None) of float logits `x` [..., V] already
    divided by the temperature."""
    lse = torch.logsumexp(x, -1)
    logp = x.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse
    return lse, logp, (lse - (torch.softmax(x, -1) * x).sum(-1)) if with_entropy else None


def _block_grad(x, ids, lse, entropy, g_logp, g_entropy, temperature: float, hit=None):
    """The gradient for the logits (before the temperature) of one block, from the upstream
    gradients of log p(chosen) and of the entropy (None: not used). `hit`: for a block of the
    vocabulary, which rows' chosen token (`ids`, relative to the block, clamped) lies in it."""
    logp_all = x - lse.unsqueeze(-1)
    prob = logp_all.exp()
    g = g_logp.unsqueeze(-1)
    grad = -prob * g
    grad.scatter_add_(-1, ids.unsqueeze(-1), g if hit is None else g * hit.unsqueeze(-1))
    if g_entropy is not None:
        grad -= prob * (logp_all + entropy.unsqueeze(-1)) * g_entropy.unsqueeze(-1)
    return grad / temperature


class _ChosenLogSoftmax(torch.autograd.Function):
    """(log p(chosen token), entropy) per position from logits [N, T, V] at a temperature.

    log p_i = x_i - logsumexp(x), H = logsumexp(x) - sum_j p_j x_j with x = logits / temperature.
    Backward: d log p_i / dx_j = [i = j] - p_j and dH / dx_j = -p_j (log p_j + H), each times
    1 / temperature for the logits.
    """

    @staticmethod
    def forward(ctx, logits_NTV, ids_NT, temperature: float, with_entropy: bool):
        N, T, V = logits_NTV.shape
        ctx.dtype = torch.promote_types(logits_NTV.dtype, torch.float32)  # float32, or float64 in tests
        logp_NT = logits_NTV.new_empty((N, T), dtype=ctx.dtype)
        lse_NT = torch.empty_like(logp_NT)
        entropy_NT = torch.empty_like(logp_NT) if with_entropy else logp_NT.new_empty(0)
        for n, t in _blocks(N, T, V):
            lse_NT[n, t], logp_NT[n, t], ent = _block_stats(logits_NTV[n, t].to(ctx.dtype) / temperature,
                                                            ids_NT[n, t], with_entropy)
            if with_entropy:
                entropy_NT[n, t] = ent
        ctx.save_for_backward(logits_NTV, ids_NT, lse_NT, entropy_NT)
        ctx.temperature, ctx.with_entropy = temperature, with_entropy
        ctx.set_materialize_grads(False)   # a detached entropy sends None, not zeros to multiply
        return logp_NT, entropy_NT

    @staticmethod
    def backward(ctx, g_logp_NT, g_entropy_NT):
        logits_NTV, ids_NT, lse_NT, entropy_NT = ctx.saved_tensors
        N, T, V = logits_NTV.shape
        grad_NTV = torch.empty_like(logits_NTV)
        use_entropy = ctx.with_entropy and g_entropy_NT is not None and g_entropy_NT.numel() > 0
        if g_logp_NT is None:
            g_logp_NT = torch.zeros_like(lse_NT)
        for n, t in _blocks(N, T, V):
            x = logits_NTV[n, t].to(ctx.dtype) / ctx.temperature
            grad_NTV[n, t] = _block_grad(x, ids_NT[n, t], lse_NT[n, t], entropy_NT[n, t] if use_entropy else None,
                                         g_logp_NT[n, t], g_entropy_NT[n, t] if use_entropy else None,
                                         ctx.temperature).to(grad_NTV.dtype)
        return grad_NTV, None, None, None


def chosen_logprobs(logits_NTV, ids_NT, temperature: float = 1.0, entropy: str | None = None):
    """(logp_NT, entropy_NT or None) of `ids_NT` under `logits_NTV / temperature`, blockwise in
    float32. `entropy`: None, "log" (detached) or "grad" (differentiable)."""
    logp_NT, entropy_NT = _ChosenLogSoftmax.apply(logits_NTV, ids_NT, float(temperature), bool(entropy))
    if not entropy:
        return logp_NT, None
    return logp_NT, entropy_NT if entropy == "grad" else entropy_NT.detach()


def adapter_autocast(model):
    """The context a forward of `model` runs in: for LoRA on a bf16/fp16 base with float32
    adapters (peft's default), autocast to the base's dtype with peft's input casting off; else
    nothing. peft casts each adapted projection's input to float32 and the backward keeps that
    copy: measured on a 2-layer bf16 model (8 x 256 tokens), 79.9 MB of saved activations
    against the full fine-tune's 58.2. Under this context the adapters multiply the bf16
    activations the base layer keeps anyway (51.4 MB); their weights and gradients stay float32.
    The HF Trainer's bf16 mode, which TRL runs in, autocasts the same way but keeps peft's casts
    (59.4 MB). With gradient checkpointing peft's casts stay on: the backward recomputes each
    layer after this context has ended, under the autocast checkpointing restores but with
    peft's casting back, and the recomputation must match the forward (a LoRA dropout on a
    float32 copy there and on bf16 here does not). 4-bit bases (QLoRA) are left alone: their
    residual stream is float32."""
    from .model import lora_layer_type
    lora_layer = lora_layer_type()
    if lora_layer is None:
        return contextlib.nullcontext()
    for m in model.modules():
        if isinstance(m, lora_layer) and m.lora_A:
            base = m.get_base_layer()
            adapter_dtype = next(iter(m.lora_A.values())).weight.dtype
            half = (torch.bfloat16, torch.float16)
            if type(base).__name__ == "Linear4bit" or base.weight.dtype not in half or adapter_dtype in half:
                return contextlib.nullcontext()
            stack = contextlib.ExitStack()
            stack.enter_context(torch.autocast(base.weight.device.type, dtype=base.weight.dtype))
            if not any(getattr(x, "gradient_checkpointing", False) is True for x in model.modules()):
                from peft.helpers import disable_input_dtype_casting
                stack.enter_context(disable_input_dtype_casting(model))
            return stack
    return contextlib.nullcontext()


def token_logprobs(model, prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT,
                   temperature: float = 1.0, entropy: str | None = None, extras: dict | None = None,
                   vision=None, share_prefix: bool = False):
    """(logp_NT, entropy_NT or None) of each completion token given everything before it.

    `entropy`: None (skip), "log" (no gradient, for metrics) or "grad" (for a regularizer).
    `extras`: a dict to receive, detached, `hidden_NTD` (the LM head's input) and `probs_NTV`,
    for losses that model the last layer (CAPO); only computed when a dict is passed.
    `vision`: the rows' `VisionInputs` when the prompts show images.
    `share_prefix`: rows with the same prompt run as one packed sequence (Prefix Grouper,
    `rlrecipes/prefix.py`); equal results, the prompt computed once. Positions past a row's
    completion mask then hold no log-prob (0).

    Logits are divided by the sampling temperature, as TRL does, so the log-probs are those of
    the distribution the tokens were drawn from. Without `extras` and where `fused_head` allows
    they are computed through the head (`head_logprobs`): equal values, no logits kept.
    """
    from .head import fused_head, head_logprobs
    fused = extras is None and fused_head(model) is not None
    if share_prefix and vision is None:
        from .prefix import shared_prefix_logits, shared_prefix_logprobs
        with adapter_autocast(model):
            if fused:
                logp_NT, entropy_NT = shared_prefix_logprobs(model, prompt_ids_NP, prompt_mask_NP, completion_ids_NT,
                                                             completion_mask_NT, temperature, entropy)
            else:
                logits_NTV = shared_prefix_logits(model, prompt_ids_NP, prompt_mask_NP, completion_ids_NT,
                                                  completion_mask_NT, extras)
        if not fused:
            logp_NT, entropy_NT = chosen_logprobs(logits_NTV, completion_ids_NT, temperature, entropy)
            if extras is not None:
                extras["probs_NTV"] = torch.softmax(logits_NTV.detach().float() / temperature, -1)
        keep_NT = completion_mask_NT.to(logp_NT.dtype)
        return logp_NT * keep_NT, None if entropy_NT is None else entropy_NT * keep_NT
    input_ids = torch.cat([prompt_ids_NP, completion_ids_NT], dim=1)
    attn = torch.cat([prompt_mask_NP, completion_mask_NT], dim=1)
    T = completion_ids_NT.shape[1]
    # with images the model computes its 3-D (M-RoPE) positions from the mask and grids
    inputs = vision.model_kwargs(model, input_ids) if vision is not None and vision.has_images() \
        else {"position_ids": position_ids(attn)}
    call = dict(input_ids=input_ids, attention_mask=attn, logits_to_keep=T + 1, use_cache=False, **inputs)
    if fused:   # the head sees the last T + 1 positions; the first T predict the completion
        with adapter_autocast(model), head_logprobs(model, completion_ids_NT, temperature, entropy,
                                                    lambda hidden: hidden[:, :-1]) as split:
            return split(model(**call).logits)
    hook = None
    if extras is not None:
        head = getattr(model, "module", model).get_output_embeddings()
        hook = head.register_forward_hook(lambda mod, inp, out: extras.__setitem__("hidden_NTD", inp[0].detach()))
    try:
        with adapter_autocast(model):
            logits_NTV = model(**call).logits[:, :-1]
    finally:
        if hook is not None:
            hook.remove()
    if extras is not None:
        extras["hidden_NTD"] = extras["hidden_NTD"][:, -(T + 1):-1]
        extras["probs_NTV"] = torch.softmax(logits_NTV.detach().float() / temperature, -1)
    return chosen_logprobs(logits_NTV, completion_ids_NT, temperature, entropy)
