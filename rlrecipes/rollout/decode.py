"""The fast engine's forward (`rlrecipes/rollout/engine.py` samples with it): a Qwen2/Llama
decoder written out over the weights `rollout/weights.py` takes, a preallocated KV cache
(`Cache`), a prefill/decode step with shapes that follow the batch (`forward`), and the decode
step with every shape fixed (`decode_static`) that `StaticDecode` replays from a CUDA graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


class Cache:
    """Preallocated keys and values [L][N, H_kv, width, D] and which key slots are real."""

    def __init__(self, w: Weights, N: int, width: int, device):
        shape = (N, w.kv_heads, width, w.head_dim)
        self.k = [torch.zeros(shape, dtype=w.dtype, device=device) for _ in w.layers]
        self.v = [torch.zeros(shape, dtype=w.dtype, device=device) for _ in w.layers]
        self.valid_NS = torch.zeros(N, width, dtype=torch.bool, device=device)
        self.length = 0

    def keep(self, rows: torch.Tensor) -> None:
        """Compaction: only `rows` stay."""
        self.k = [k[rows] for k in self.k]
        self.v = [v[rows] for v in self.v]
        self.valid_NS = self.valid_NS[rows]


def rope_table(w: Weights, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [length, D] of every position a sample call reaches, computed once per call."""
    angles = torch.arange(length, device=device).float().unsqueeze(-1) * w.inv_freq.to(device)
    emb = torch.cat((angles, angles), -1)
    return (emb.cos() * w.rope_scale).to(w.dtype), (emb.sin() * w.rope_scale).to(w.dtype)


def _decode_attention(q, k, v, bias_N11S, kv_heads: int):
    """One query per row against the cache, written out: q [N, H, 1, D], k/v [N, H_kv, S, D];
    scores and softmax in float32 (as transformers' eager attention). On CPU this is about 5x
    faster than `scaled_dot_product_attention` for a single query."""
    N, H, _, D = q.shape
    q = q.view(N, kv_heads, H // kv_heads, D)                         # query heads grouped by kv head
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * D ** -0.5 + bias_N11S
    att = torch.matmul(scores.softmax(-1).to(v.dtype), v)             # [N, H_kv, H/H_kv, D]
    return att.view(N, H, 1, D)


def forward(w: Weights, ids_NS, pos_NS, valid_NS, cache: Cache, rope) -> torch.Tensor:
    """Float32 logits of each row's last position after appending `ids_NS` (at positions
    `pos_NS`; `valid_NS` False on left padding) to the cache. `rope`: `rope_table`'s (cos, sin)."""
    N, S = ids_NS.shape
    device, t0, t1 = ids_NS.device, cache.length, cache.length + S
    cos, sin = rope[0][pos_NS].unsqueeze(1), rope[1][pos_NS].unsqueeze(1)
    cache.valid_NS[:, t0:t1] = valid_NS
    if S == 1:
        bias = torch.zeros(N, 1, 1, t1, device=device).masked_fill_(~cache.valid_NS[:, None, None, :t1], float("-inf"))
    else:
        keys, queries = torch.arange(t1, device=device), torch.arange(t0, t1, device=device).unsqueeze(1)
        # causal over real keys; a padding query sees itself (its output is never used; no NaN)
        mask = (cache.valid_NS[:, None, None, :t1] & (keys <= queries)) | (keys == queries)
    h = w.embed[ids_NS]
    for layer, k_cache, v_cache in zip(w.layers, cache.k, cache.v):
        x = _rms(h, layer["ln1"])
        q = _rope(_proj(x, layer["q"]).view(N, S, w.heads, w.head_dim).transpose(1, 2), cos, sin)
        k_cache[:, :, t0:t1] = _rope(_proj(x, layer["k"]).view(N, S, w.kv_heads, w.head_dim).transpose(1, 2), cos, sin)
        v_cache[:, :, t0:t1] = _proj(x, layer["v"]).view(N, S, w.kv_heads, w.head_dim).transpose(1, 2)
        if S == 1:
            att = _decode_attention(q, k_cache[:, :, :t1], v_cache[:, :, :t1], bias, w.kv_heads)
        else:
            att = F.scaled_dot_product_attention(q, k_cache[:, :, :t1], v_cache[:, :, :t1], attn_mask=mask,
                                                 enable_gqa=w.kv_heads != w.heads)
        h = h + _proj(att.transpose(1, 2).reshape(N, S, -1), layer["o"])
        x = _rms(h, layer["ln2"])
        h = h + _proj(F.silu(_proj(x, layer["gate"])) * _proj(x, layer["up"]), layer["down"])
    cache.length = t1
    return F.linear(_rms(h[:, -1], w.norm), w.lm_head).float()


def decode_static(w: Weights, tok_N, pos_N, slot_1, cache: Cache, rope) -> torch.Tensor:
    """`forward` for one new token per row with every shape fixed, so that it can be captured as
    a CUDA graph: the token's keys and values go to cache slot `slot_1` (a 1-element tensor, not
    a Python int), and attention reads the cache's whole width, the slots not yet written being
    masked by `cache.valid_NS`. Same arithmetic as `forward`'s decode branch (a test holds them
    equal); the cache's `length` is the caller's to advance."""
    N = tok_N.shape[0]
    cos, sin = rope[0][pos_N].view(N, 1, 1, -1), rope[1][pos_N].view(N, 1, 1, -1)
    cache.valid_NS.index_fill_(1, slot_1, True)
    bias = torch.zeros(N, 1, 1, cache.valid_NS.shape[1], device=tok_N.device).masked_fill_(
        ~cache.valid_NS[:, None, None, :], float("-inf"))
    h = w.embed[tok_N].unsqueeze(1)
    for layer, k_cache, v_cache in zip(w.layers, cache.k, cache.v):
        x = _rms(h, layer["ln1"])
        q = _rope(_proj(x, layer["q"]).view(N, 1, w.heads, w.head_dim).transpose(1, 2), cos, sin)
        k_cache.index_copy_(2, slot_1, _rope(_proj(x, layer["k"]).view(N, 1, w.kv_heads, w.head_dim).transpose(1, 2),
                                              cos, sin))
        v_cache.index_copy_(2, slot_1, _proj(x, layer["v"]).view(N, 1, w.kv_heads, w.head_dim).transpose(1, 2))
        att = _decode_attention(q, k_cache, v_cache, bias, w.kv_heads)
        h = h + _proj(att.transpose(1, 2).reshape(N, 1, -1), layer["o"])
        x = _rms(h, layer["ln2"])
        h = h + _proj(F.silu(_proj(x, layer["gate"])) * _proj(x, layer["up"]), layer["down"])
    return F.linear(_rms(h[:, -1], w.norm), w.lm_head).float()


class StaticDecode:
    """`decode_static` replayed from a CUDA graph (`generation.cuda_graphs`): one launch per
    token instead of ~45 per layer, which is what bounds decoding small models, and large ones
    at small batch, on a GPU. Captured at the first decode step of a `sample` call (the weights
    it reads may be a new LoRA-merged copy after every update) in a private memory pool, freed
    with the object. The first call runs eagerly on a side stream (warm-up, as capture requires;
    its result is the real first step), then the graph is captured and replayed. Off CUDA it
    runs `decode_static` eagerly (what the CPU tests check against `forward`)."""

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
        run = lambda: decode_static(self.w, self.tok_N, self.pos_N, self.slot_1, self.cache, self.rope)  # noqa: E731
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
