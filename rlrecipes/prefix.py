"""Prefix Grouper's shared-prefix forward (Liu et al., arXiv 2506.05433, §3; `train.prefix_sharing`).

The rows of a batch that share a prompt (a GRPO group) are packed into one sequence,
[prompt ‖ c_1 ‖ … ‖ c_G], each completion in a slot of T positions, and run through the model
once. Attention is computed in the paper's two parts (its "grouped attention", §3.1):
  1. the prompt attends causally to itself;
  2. each completion attends to the whole prompt's keys and values (computed once, shared by
     the G completions) and causally to itself, never to another completion.
Positions of every completion continue from the prompt's length. Each completion token therefore
sees exactly the keys and values it sees in the plain forward of [prompt ‖ c_g], so log-probs
are equal (up to float summation order) and so are gradients: the prompt's activations receive
the sum of the G completions' gradients, which is what the G separate copies receive between
them (§3.2, "training equivalence").

Cost per group, prompt length P, completion length L, G completions: token-forwards in the
linear layers and MLP P + GL instead of G(P + L); attention scores P² + G·L·(P + L) instead of
G(P + L)² (an earlier version here used one dense masked matrix over the packed sequence,
(P + GL)², more than the plain forward's at short prompts).

How: a registered transformers attention function (`rlrecipes_prefix`) that does the two parts
when the forward passes a `prefix_layout`, and is plain `sdpa` otherwise (generation, the plain
forward). The model's `config._attn_implementation` is switched to it at the first shared
forward, so gradient-checkpointing recomputation takes the same path. A model whose attention
does not go through transformers' attention interface cannot use this.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMPL = "rlrecipes_prefix"


def pack_groups(prompt_ids_NP, prompt_mask_NP, completion_mask_NT):
    """Group rows by identical (unpadded) prompts, in order of first appearance.

    Returns (groups: list of row lists, prefix lengths, completion lengths)."""
    keys = [tuple(ids[m.bool()].tolist()) for ids, m in zip(prompt_ids_NP.cpu(), prompt_mask_NP.cpu())]
    order: dict[tuple, list[int]] = {}
    for row, key in enumerate(keys):
        order.setdefault(key, []).append(row)
    groups = list(order.values())
    return groups, [len(keys[g[0]]) for g in groups], completion_mask_NT.sum(1).tolist()


@dataclass
class Layout:
    """Packed sequences [B', P + G·T]: prompt in [0, P) (left-aligned, padded to P), completion
    slot g in [P + g·T, P + (g+1)·T). Masks are True where a query may see a key."""
    P: int
    G: int
    T: int
    prefix_mask: torch.Tensor      # [B', 1, P, P]: causal over the group's real prompt tokens
    completion_mask: torch.Tensor  # [B'·G, 1, T, P + T]: the real prompt, then causal over its own slot


def packed_inputs(prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT, pad_id: int = 0):
    """(ids [B', S], position ids [B', S], Layout, source [N, T]: flat index into [B'·S] of the
    logits that predict each completion token)."""
    groups, prefix, _ = pack_groups(prompt_ids_NP, prompt_mask_NP, completion_mask_NT)
    N, T = completion_ids_NT.shape
    P, G, device = max(prefix), max(len(g) for g in groups), completion_ids_NT.device
    S = P + G * T
    ids = torch.full((len(groups), S), pad_id, dtype=torch.long, device=device)
    pos = torch.arange(S, device=device).repeat(len(groups), 1)
    source = torch.zeros(N, T, dtype=torch.long, device=device)
    for b, (rows, p) in enumerate(zip(groups, prefix)):
        ids[b, :p] = prompt_ids_NP[rows[0]][prompt_mask_NP[rows[0]].bool()]
        for g, row in enumerate(rows):
            start = P + g * T
            ids[b, start:start + T] = completion_ids_NT[row]
            pos[b, start:start + T] = torch.arange(p, p + T, device=device)
            # token t is predicted at the previous position: the prompt's last token for t = 0
            source[row] = b * S + torch.cat([torch.tensor([p - 1], device=device),
                                             torch.arange(start, start + T - 1, device=device)])
    real_key = torch.arange(P, device=device) < torch.tensor(prefix, device=device)[:, None]    # [B', P]
    causal_P = torch.ones(P, P, dtype=torch.bool, device=device).tril()
    prefix_mask = (real_key[:, None, :] & causal_P) | torch.eye(P, dtype=torch.bool, device=device)  # padding sees itself
    own = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    completion_mask = torch.cat([real_key.repeat_interleave(G, 0)[:, None, :].expand(-1, T, P),
                                 own.expand(len(groups) * G, T, T)], -1)
    return ids, pos, Layout(P, G, T, prefix_mask.unsqueeze(1), completion_mask.unsqueeze(1)), source


def _prefix_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      prefix_layout: Layout | None = None, **kwargs):
    """transformers attention function: the two parts above when `prefix_layout` is given,
    else `sdpa`. query [B', H, S, D], key/value [B', H_kv, S, D]; returns ([B', S, H, D], None)."""
    if prefix_layout is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    L = prefix_layout
    B, H, _, D = query.shape
    H_kv, gqa = key.shape[1], key.shape[1] != query.shape[1]
    drop = dropout if module.training else 0.0
    prefix = F.scaled_dot_product_attention(query[:, :, :L.P], key[:, :, :L.P], value[:, :, :L.P],
                                            attn_mask=L.prefix_mask, dropout_p=drop, scale=scaling, enable_gqa=gqa)

    def slots(x, heads):   # [B', h, G·T, D] -> [B'·G, h, T, D]
        return x.reshape(B, heads, L.G, L.T, D).transpose(1, 2).reshape(B * L.G, heads, L.T, D)

    def shared(x):         # the prompt's [B', h, P, D], once per completion: [B'·G, h, P, D]
        return x.unsqueeze(1).expand(B, L.G, *x.shape[1:]).reshape(B * L.G, *x.shape[1:])
    keys = torch.cat([shared(key[:, :, :L.P]), slots(key[:, :, L.P:], H_kv)], 2)
    values = torch.cat([shared(value[:, :, :L.P]), slots(value[:, :, L.P:], H_kv)], 2)
    comp = F.scaled_dot_product_attention(slots(query[:, :, L.P:], H), keys, values, attn_mask=L.completion_mask,
                                          dropout_p=drop, scale=scaling, enable_gqa=gqa)
    comp = comp.reshape(B, L.G, H, L.T, D).transpose(1, 2).reshape(B, H, L.G * L.T, D)
    return torch.cat([prefix, comp], 2).transpose(1, 2).contiguous(), None


def install(model) -> None:
    """Register the attention function (and sdpa's mask format under its name) and switch the
    model to it; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(IMPL, _prefix_attention)
    AttentionMaskInterface.register(IMPL, sdpa_mask)
    from .model import unwrapped
    base = unwrapped(getattr(model, "module", model))   # under DDP, then peft
    if base.config._attn_implementation != IMPL:
        base.config._attn_implementation = IMPL


def _packed_forward(model, ids, pos, layout):
    """The model's output for packed sequences (a dict of masks tells the model they are
    prepared; none: the layout carries them)."""
    return model(input_ids=ids, position_ids=pos, attention_mask={"full_attention": None, "sliding_attention": None},
                 prefix_layout=layout, use_cache=False)


def shared_prefix_logits(model, prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT,
                         hook_out: dict | None = None):
    """Logits [N, T, V] predicting each completion token, from one packed forward per group.
    `hook_out`: receives `hidden_NTD`, the LM head's input at the same positions."""
    install(model)
    ids, pos, layout, source = packed_inputs(prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT)
    hook = None
    if hook_out is not None:
        head = getattr(model, "module", model).get_output_embeddings()
        hook = head.register_forward_hook(lambda mod, inp, out: hook_out.__setitem__("hidden", inp[0]))
    try:
        logits = _packed_forward(model, ids, pos, layout).logits
    finally:
        if hook is not None:
            hook.remove()
    N, T = completion_ids_NT.shape
    flat = source.view(-1)
    if hook_out is not None:
        hidden = hook_out.pop("hidden")
        hook_out["hidden_NTD"] = hidden.reshape(-1, hidden.shape[-1])[flat].view(N, T, -1).detach()
    return logits.reshape(-1, logits.shape[-1])[flat].view(N, T, -1)


def shared_prefix_logprobs(model, prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT,
                           temperature: float, entropy: str | None):
    """`chosen_logprobs` of the completions from one packed forward per group, through the LM
    head without logits (`head.head_logprobs`): the head computes only at the positions that
    predict a completion token, the prompt's last position once per completion."""
    from .head import head_logprobs
    install(model)
    ids, pos, layout, source = packed_inputs(prompt_ids_NP, prompt_mask_NP, completion_ids_NT, completion_mask_NT)
    flat = source.view(-1)
    with head_logprobs(model, completion_ids_NT, temperature, entropy,
                       lambda hidden: hidden.reshape(-1, hidden.shape[-1])[flat]) as split:
        return split(_packed_forward(model, ids, pos, layout).logits)
