"""The fast engine's forward (`rlrecipes/rollout/engine.py` samples with it): a Qwen2/Llama
decoder written out over the weights `rollout/weights.py` takes, a KV cache that holds each
prompt once for its G sample rows (`Cache`), the prompts' prefill (`prefill`), and the rows' step
(`decode`: one new token each, or a row's own tokens after its prompt such as a tool rollout's
earlier turns), whose fixed-shape form `StaticDecode` replays from a CUDA graph.

Shared-prefix decoding (as Hydragen, Juravsky et al., arXiv 2402.05099, §3, computes it): the
prompt's keys and values are never copied into its G rows. A decode step's attention takes the
prompt part as one matmul per prompt for the queries of all its rows ([G·h, D] x [D, P]), the
rows' own tokens as one small matmul per row, and a single softmax over both. Equal to attention
over the concatenated cache (up to float rounding); the prompt's cache costs B instead of B·G
rows, and each decode step reads it once per prompt instead of once per row. A row's suffix of
several tokens (prefilled once per `sample` call) attends through `scaled_dot_product_attention`
over its prompt's keys and values copied per row for one layer at a time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..logprobs import position_ids
from .weights import Weights


def _rms(x, weight_eps):
    weight, eps = weight_eps
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
    return x * cos + rotated * sin


def _proj(x, weight_bias):
    """A projection in its weight's dtype, the result back in the input's (as bitsandbytes'
    Linear4bit does: a float32 residual stream through bf16 4-bit matmuls); no casts when the
    dtypes agree."""
    weight, bias = weight_bias
    if x.dtype == weight.dtype:
        return F.linear(x, weight, bias)
    return F.linear(x.to(weight.dtype), weight, bias).to(x.dtype)


def _bias(valid, shape) -> torch.Tensor:
    """0 where a key is valid, -inf elsewhere, float32, for scores of `shape`."""
    bias = torch.zeros(shape, dtype=torch.float32, device=valid.device)
    return bias.masked_fill_(~valid.reshape(shape), float("-inf"))


class Cache:
    """Keys and values of one `sample` call in two parts: each prompt's [L][B', H_kv, P, D]
    (`prefill` writes them; B' prompts still in use), and each row's own tokens after it
    [L][N, H_kv, width, D] with which slots are written (`valid_NS`). Row n samples from
    prompt `group_N[n]`, as its `slot_N[n]`-th of G. `uniform`: every prompt has all its G
    rows, in order, so grouping rows is a reshape."""

    def __init__(self):
        self.pk, self.pv, self.k, self.v = [], [], [], []
        self.length, self.G, self.uniform = 0, 1, True
        self.gaps = False   # some written row slot is padding (a left-padded suffix), so masks are needed

    def share(self, rows_B, width: int) -> None:
        """After the prefill: `rows_B` rows per prompt (an int, or a count per prompt, each >= 1),
        each with room for `width` own tokens."""
        B, kv, _, D = self.pk[0].shape
        device = self.pk[0].device
        counts = torch.as_tensor(rows_B, device=device).expand(B)
        self.group_N = torch.arange(B, device=device).repeat_interleave(counts)
        N = len(self.group_N)
        first_B = counts.cumsum(0) - counts
        self.slot_N = torch.arange(N, device=device) - first_B[self.group_N]
        self.G = int(counts.max())
        self.uniform = N == B * self.G
        self.k = [torch.zeros(N, kv, width, D, dtype=k.dtype, device=device) for k in self.pk]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.valid_NS = torch.zeros(N, width, dtype=torch.bool, device=device)

    def keep(self, rows: torch.Tensor) -> None:
        """Compaction: only `rows` (ascending) stay; prompts none of them samples from go. Every
        tensor a step reads is replaced, so a CUDA graph captured before must not replay after
        (`sample` builds a new `StaticDecode`)."""
        self.k, self.v = [k[rows] for k in self.k], [v[rows] for v in self.v]
        self.valid_NS = self.valid_NS[rows]
        used, self.group_N = torch.unique(self.group_N[rows], return_inverse=True)
        self.slot_N = self.slot_N[rows]
        if len(used) < len(self.prefix_valid_BP):
            self.pk, self.pv = [k[used] for k in self.pk], [v[used] for v in self.pv]
            self.set_prefix_valid(self.prefix_valid_BP[used])
        self.uniform = len(rows) == len(used) * self.G

    def set_prefix_valid(self, valid_BP) -> None:
        self.prefix_valid_BP = valid_BP
        self.prefix_bias = _bias(valid_BP, (len(valid_BP), 1, 1, valid_BP.shape[1]))

    def to_groups(self, x) -> torch.Tensor:
        """Rows' [N, H_kv, h, X] as each prompt's [B', H_kv, G·h, X] (zeros for rows that left)."""
        N, kv, h, X = x.shape
        if not self.uniform:
            grouped = x.new_zeros(len(self.prefix_valid_BP), self.G, kv, h, X)
            grouped[self.group_N, self.slot_N] = x
            x = grouped
        return x.view(-1, self.G, kv, h, X).transpose(1, 2).reshape(-1, kv, self.G * h, X)

    def from_groups(self, x, h: int) -> torch.Tensor:
        """`to_groups`' inverse: [B', H_kv, G·h, X] to the rows' [N, H_kv, h, X]."""
        B, kv, _, X = x.shape
        x = x.view(B, kv, self.G, h, X).transpose(1, 2)
        return x.reshape(-1, kv, h, X) if self.uniform else x[self.group_N, self.slot_N]


def rope_table(w: Weights, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [length, D] of every position a sample call reaches, computed once per call."""
    angles = torch.arange(length, device=device).float().unsqueeze(-1) * w.inv_freq.to(device)
    emb = torch.cat((angles, angles), -1)
    return (emb.cos() * w.rope_scale).to(w.dtype), (emb.sin() * w.rope_scale).to(w.dtype)


def _qkv(w: Weights, layer, h, cos, sin):
    """Queries [N, H, S, D], keys and values [N, H_kv, S, D] of the residual stream `h` [N, S, hidden]."""
    N, S, _ = h.shape
    x = _rms(h, layer["ln1"])
    q = _rope(_proj(x, layer["q"]).view(N, S, w.heads, w.head_dim).transpose(1, 2), cos, sin)
    k = _rope(_proj(x, layer["k"]).view(N, S, w.kv_heads, w.head_dim).transpose(1, 2), cos, sin)
    return q, k, _proj(x, layer["v"]).view(N, S, w.kv_heads, w.head_dim).transpose(1, 2)


def _rest(layer, h, att):
    """The residual stream after the attention output `att` [N, H, S, D]: output projection, MLP."""
    N, S, _ = h.shape
    h = h + _proj(att.transpose(1, 2).reshape(N, S, -1), layer["o"])
    x = _rms(h, layer["ln2"])
    return h + _proj(F.silu(_proj(x, layer["gate"])) * _proj(x, layer["up"]), layer["down"])


def _sdpa(q, k, v, mask) -> torch.Tensor:
    """`scaled_dot_product_attention` with a boolean mask, queries [N, H, S, D] on keys and
    values [N, H_kv, S', D]. On CUDA the keys and values are first copied to every query head:
    its fused kernels take a mask only without `enable_gqa` (transformers' `use_gqa_in_sdpa`
    decides the same), and its math fallback would build the whole float32 scores."""
    H, kv = q.shape[1], k.shape[1]
    if kv != H and q.device.type == "cuda":
        k, v = k.repeat_interleave(H // kv, 1), v.repeat_interleave(H // kv, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != H)


def _logits(w: Weights, h_ND) -> torch.Tensor:
    return F.linear(_rms(h_ND, w.norm), w.lm_head).float()


def prefill(w: Weights, ids_BP, valid_BP, cache: Cache, rope) -> torch.Tensor:
    """Float32 logits [B, V] of each prompt's last position; its keys and values go to `cache`.
    `valid_BP`: False on left padding (positions count the real tokens only)."""
    B, P = ids_BP.shape
    pos_BP = position_ids(valid_BP.long())
    cos, sin = rope[0][pos_BP].unsqueeze(1), rope[1][pos_BP].unsqueeze(1)
    keys = torch.arange(P, device=ids_BP.device)
    # causal over real keys; a padding query sees itself (its output is never used; no NaN)
    mask = (valid_BP[:, None, None, :] & (keys <= keys[:, None])) | (keys == keys[:, None])
    h = w.embed[ids_BP]
    cache.pk, cache.pv = [], []
    for layer in w.layers:
        q, k, v = _qkv(w, layer, h, cos, sin)
        cache.pk.append(k.contiguous())
        cache.pv.append(v.contiguous())
        att = _sdpa(q, k, v, mask)
        h = _rest(layer, h, att)
    cache.set_prefix_valid(valid_BP)
    return _logits(w, h[:, -1])


def _decode_attention(q, pk, pv, k, v, cache: Cache, row_bias):
    """One query per row [N, H, 1, D] against its prompt's keys and values (`pk`, `pv`:
    [B', H_kv, P, D], one matmul per prompt for all its rows' queries) and its own ([N, H_kv, W,
    D]; `row_bias` [N, 1, 1, W] or None: all visible), with one softmax over both; scores and
    softmax in float32 (as transformers' eager attention). Written out: on CPU about 5x faster
    than `scaled_dot_product_attention` for a single query."""
    N, H, _, D = q.shape
    h, P = H // pk.shape[1], pk.shape[2]
    q = q.view(N, pk.shape[1], h, D)                                  # query heads grouped by kv head
    shared = torch.matmul(cache.to_groups(q), pk.transpose(-1, -2)).float() * D ** -0.5 + cache.prefix_bias
    own = torch.matmul(q, k.transpose(-1, -2)).float() * D ** -0.5
    own = own if row_bias is None else own + row_bias
    probs = torch.cat([cache.from_groups(shared, h), own], -1).softmax(-1).to(v.dtype)
    shared_att = cache.from_groups(torch.matmul(cache.to_groups(probs[..., :P]), pv), h)
    att = (shared_att.float() + torch.matmul(probs[..., P:], v).float()).to(v.dtype)   # one rounding in bf16
    return att.reshape(N, H, 1, D)


def _rows_attention(q, pk, pv, k, v, cache: Cache, seen_NSW):
    """S > 1 queries per row [N, H, S, D] (a row's own suffix): `scaled_dot_product_attention`
    over its prompt's keys and values, copied per row for one layer at a time, then its own
    (`seen_NSW`: which own slot each query sees). Written out, the float32 scores [N, H, S, P + W]
    of a long suffix would be the largest tensor of the step; the copy lives for one layer (on a
    GPU through a fused kernel, `_sdpa`; not measured there yet)."""
    N, _, S, _ = q.shape
    group = cache.group_N
    keys, values = torch.cat([pk[group], k], 2), torch.cat([pv[group], v], 2)
    mask = torch.cat([cache.prefix_valid_BP[group][:, None, :].expand(N, S, -1), seen_NSW], -1).unsqueeze(1)
    return _sdpa(q, keys, values, mask)


def decode(w: Weights, tok_NS, pos_NS, cache: Cache, rope, slot_1=None, valid_NS=None) -> torch.Tensor:
    """Float32 logits [N, V] of each row's last position after appending `tok_NS` [N, S] (at
    positions `pos_NS`; `valid_NS`: False on left padding, None: all real) to the rows' cache.
    Without `slot_1`: written at row slots from `cache.length`, which advances; attention reads
    the slots written so far, causally. With `slot_1` (S = 1; a 1-element tensor, not a Python
    int), every shape is fixed, so that the step can be captured as a CUDA graph: written at that
    slot, attention reads the whole width with the slots not yet written masked; `cache.length`
    is the caller's to advance. Both give the same numbers (a test holds them equal)."""
    N, S = tok_NS.shape
    cos, sin = rope[0][pos_NS].unsqueeze(1), rope[1][pos_NS].unsqueeze(1)
    if slot_1 is None:
        t0, width = cache.length, cache.length + S
        cache.valid_NS[:, t0:width] = True if valid_NS is None else valid_NS
        cache.gaps = cache.gaps or (valid_NS is not None and not bool(valid_NS.all()))
        seen = None   # one token after rows that wrote every slot so far: nothing to mask
        if S > 1 or cache.gaps:
            slots = torch.arange(width, device=tok_NS.device)
            seen = cache.valid_NS[:, None, :width] & (slots <= t0 + torch.arange(S, device=tok_NS.device)[:, None])
    else:
        width = cache.valid_NS.shape[1]
        cache.valid_NS.index_fill_(1, slot_1, True)
        seen = cache.valid_NS[:, None, :]
    row_bias = None if S > 1 or seen is None else _bias(seen, (N, 1, 1, width))
    h = w.embed[tok_NS]
    for layer, pk, pv, k_cache, v_cache in zip(w.layers, cache.pk, cache.pv, cache.k, cache.v):
        q, k, v = _qkv(w, layer, h, cos, sin)
        if slot_1 is None:
            k_cache[:, :, t0:width], v_cache[:, :, t0:width] = k, v
        else:
            k_cache.index_copy_(2, slot_1, k)
            v_cache.index_copy_(2, slot_1, v)
        own_k, own_v = k_cache[:, :, :width], v_cache[:, :, :width]
        att = _rows_attention(q, pk, pv, own_k, own_v, cache, seen) if S > 1 else \
            _decode_attention(q, pk, pv, own_k, own_v, cache, row_bias)
        h = _rest(layer, h, att)
    if slot_1 is None:
        cache.length = width
    return _logits(w, h[:, -1])


class StaticDecode:
    """`decode` with fixed shapes replayed from a CUDA graph (`generation.cuda_graphs`): one launch per
    token instead of ~45 per layer, which is what bounds decoding small models, and large ones
    at small batch, on a GPU. Captured at the first decode step of a `sample` call (the weights
    it reads may be a new LoRA-merged copy after every update) in a private memory pool, freed
    with the object. The first call runs eagerly on a side stream (warm-up, as capture requires;
    its result is the real first step), then the graph is captured and replayed. Off CUDA it
    runs the fixed-shape `decode` eagerly (what the CPU tests check against the compacting loop).
    A graph reads the cache's tensors where they were at capture: after `Cache.keep` it is
    stale, and `sample` builds a new one."""

    def __init__(self, w: Weights, cache: Cache, rope, N: int, device):
        self.w, self.cache, self.rope = w, cache, rope
        self.tok_N = torch.zeros(N, dtype=torch.long, device=device)
        self.pos_N = torch.zeros(N, dtype=torch.long, device=device)
        self.slot_1 = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = self.logits_NV = None

    def __call__(self, tok_N, pos_N, slot: int) -> torch.Tensor:
        self.tok_N.copy_(tok_N)
        self.pos_N.copy_(pos_N)
        self.slot_1.fill_(slot)
        run = lambda: decode(self.w, self.tok_N[:, None], self.pos_N[:, None], self.cache, self.rope,  # noqa: E731
                             self.slot_1)
        if self.tok_N.device.type != "cuda":
            return run()
        if self.graph is None:
            with torch.cuda.device(self.tok_N.device):   # streams and graphs live on the model's device
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    first = run()
                torch.cuda.current_stream().wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.logits_NV = run()
            return first
        self.graph.replay()
        return self.logits_NV.clone()
