"""Prefix Grouper's shared-prefix forward (Liu et al., arXiv 2506.05433, §3; `train.prefix_sharing`).

The rows of a batch that share a prompt (a GRPO group) are packed into one sequence,
[prompt ‖ c_1 ‖ … ‖ c_G], and run through the model once with a block attention mask: prompt
tokens attend causally among themselves; each completion attends to the whole prompt and
causally to itself, never to another completion. Positions of every completion continue from
the prompt's length. Each completion token therefore sees exactly the keys and values it sees
in the plain forward of [prompt ‖ c_g], so log-probs are equal (up to float summation order)
and so are gradients: the prompt's activations receive the sum of the G completions' gradients,
which is what the G separate copies receive between them (§3.2, "training equivalence").

Token-forwards per group: P + sum(L_g) instead of G·P + sum(L_g), i.e. G(P+L)/(P+GL) fewer for
equal lengths L (P=1000, L=100, G=8: 8800 vs 1800, 4.9x). Attention here is a dense masked
matrix over the packed sequence ((P+GL)² scores against G(P+L)²), not the paper's two-part
kernel; the saving is in the linear layers and the MLP, which dominate at these lengths.

Deviation from the reference code (johncaged/PrefixGrouper): instead of patching the attention
function, we pass a 4-D mask and position ids to the unmodified model, which works with any
architecture whose attention takes such a mask (transformers' `sdpa` and `eager`).
"""
from __future__ import annotations

import torch

from .errors import UserError


def pack_groups(prompt_ids_NP, prompt_mask_NP, completion_mask_NT):
    """Group rows by identical (unpadded) prompts, in order of first appearance.

    Returns (groups: list of row lists, prefix lengths, completion lengths)."""
    keys = [tuple(ids[m.bool()].tolist()) for ids, m in zip(prompt_ids_NP.cpu(), prompt_mask_NP.cpu())]
    order: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        order.setdefault(key, []).append(row)
    groups = list(order.values())
    return groups, [len(keys[g[0]]) for g in groups], completion_mask_NT.sum(1).tolist()


def packed_inputs(prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT, pad_id: int = 0):
    """(ids [B', S], position ids [B', S], allowed [B', 1, S, S] bool, source [N, T] flat index
    into [B'·S] of the logits that predict each completion token)."""
    groups, prefix, lengths = pack_groups(prompt_ids_NP, prompt_mask_NP, completion_mask_NT)
    N, T = completion_ids_NT.shape
    S = max(p + sum(lengths[r] for r in g) for g, p in zip(groups, prefix))
    device = completion_ids_NT.device
    ids = torch.full((len(groups), S), pad_id, dtype=torch.long, device=device)
    pos = torch.zeros_like(ids)
    segment = torch.full_like(ids, -1)                  # -1 padding, 0 prompt, k completion k
    source = torch.zeros(N, T, dtype=torch.long, device=device)
    for b, (rows, p) in enumerate(zip(groups, prefix)):
        first = rows[0]
        ids[b, :p] = prompt_ids_NP[first][prompt_mask_NP[first].bool()]
        pos[b, :p] = torch.arange(p, device=device)
        segment[b, :p] = 0
        start = p
        for k, row in enumerate(rows, 1):
            L = lengths[row]
            ids[b, start:start + L] = completion_ids_NT[row, :L]
            pos[b, start:start + L] = torch.arange(p, p + L, device=device)
            segment[b, start:start + L] = k
            # token t of this completion is predicted at the previous position: the prompt's last
            # token for t = 0. Past its length (masked out) any valid position will do.
            prev = torch.cat([torch.tensor([p - 1], device=device), torch.arange(start, start + L - 1, device=device)])
            source[row] = b * S + torch.cat([prev, prev.new_full((T - L,), p - 1)])[:T]
            start += L
    q, k = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(S, S, dtype=torch.bool, device=device).tril()
    allowed = (k >= 0) & ((k == 0) | (k == q)) & causal & (q >= 0)
    allowed |= torch.eye(S, dtype=torch.bool, device=device)   # a padding query sees itself: no NaN
    return ids, pos, allowed.unsqueeze(1), source


def attention_mask_for(model, allowed):
    """The 4-D mask in the form the model's attention implementation takes."""
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    raise UserError("train.prefix_sharing", f"needs attention that takes a 4-D mask (sdpa or eager), "
                    f"the model uses {impl!r}", "set train.prefix_sharing: false")


def shared_prefix_logits(model, prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT,
                         hook_out: dict | None = None):
    """Logits [N, T, V] predicting each completion token, from one packed forward per group.
    `hook_out`: receives `hidden_NTD`, the LM head's input at the same positions."""
    ids, pos, allowed, source = packed_inputs(prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT)
    hook = None
    if hook_out is not None:
        head = getattr(model, "module", model).get_output_embeddings()
        hook = head.register_forward_hook(lambda mod, inp, out: hook_out.__setitem__("hidden", inp[0]))
    try:
        logits = model(input_ids=ids, position_ids=pos, attention_mask=attention_mask_for(model, allowed),
                       use_cache=False).logits
    finally:
        if hook is not None:
            hook.remove()
    N, T = completion_ids_NT.shape
    flat = source.view(-1)
    if hook_out is not None:
        hidden = hook_out.pop("hidden")
        hook_out["hidden_NTD"] = hidden.reshape(-1, hidden.shape[-1])[flat].view(N, T, -1).detach()
    return logits.reshape(-1, logits.shape[-1])[flat].view(N, T, -1)
