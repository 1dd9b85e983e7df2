"""The `fast` rollout engine (`generation.engine: fast`): our own decode loop for Qwen2/Llama-
architecture text models, behind the same interface as `generate`.

What it does differently from HF `generate`:
- each distinct prompt is prefilled once and its KV cache copied into its G sample rows
  (`repeat`), instead of prefilling the same prompt G times;
- the KV cache is preallocated for prompt + max_new_tokens (no growing concatenations);
- rows that finished (EOS or a stop token) leave the active batch, so one long completion does
  not keep the other rows decoding;
- it reads effective weights once per policy update (`rollout/weights.py`): plain layers in
  place, LoRA merged and 4-bit layers dequantised into a generation copy;
- on a GPU, decode steps replay a CUDA graph (`generation.cuda_graphs`, `StaticDecode`), captured
  again at a smaller size when half the rows have finished;
- sampling follows `generate` with do_sample: min_new_tokens masks EOS, then temperature, top-k,
  top-p, softmax, multinomial. Unlike our `hf` path it ignores the checkpoint's own
  `generation_config` (e.g. a repetition penalty), so samples come from the policy the loss uses.

Models it does not cover (vision-language prompts, other architectures, dynamic RoPE scaling,
DoRA adapters) go to `generate` unchanged; `fast_supported` says why.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .generate import Rollout, encode_prompts, generate, sampled_rollout
from .weights import Weights, _base, lora_layer_type, weights_of

_ARCHES = ("qwen2", "llama")
_STATIC_ROPE = ("default", "linear", "llama3")


def fast_supported(model, prompts=()) -> str | None:
    """None if the fast engine can run this model on these prompts, else the reason it cannot."""
    from ..vision import ImagePrompt
    base = _base(model)
    kind = getattr(base.config, "model_type", None)
    if kind not in _ARCHES:
        return f"architecture {kind!r} (the fast engine knows {', '.join(_ARCHES)})"
    rope = getattr(base.model.rotary_emb, "rope_type", "default")
    if rope not in _STATIC_ROPE:
        return f"RoPE type {rope!r}"
    if any(isinstance(p, ImagePrompt) for p in prompts):
        return "image prompts"
    lora_layer = lora_layer_type()
    if lora_layer is not None and any(m.use_dora.get(a) for m in base.modules() if isinstance(m, lora_layer)
                                      for a in m.active_adapters):
        return "DoRA adapters"
    return None


# --- the forward ----------------------------------------------------------------------------

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


# --- sampling -------------------------------------------------------------------------------

def warp(logits_NV, step: int, *, stop_ids, min_new: int = 0, temperature: float = 1.0, top_k: int = 0,
         top_p: float = 1.0) -> torch.Tensor:
    """The scores `generate` samples from: min_new_tokens bans the stop ids, then temperature,
    top-k and top-p (transformers' logits warpers, in their order); removed tokens are -inf."""
    if step < min_new:
        logits_NV = logits_NV.index_fill(1, torch.as_tensor(stop_ids, device=logits_NV.device), float("-inf"))
    logits_NV = logits_NV / temperature
    if top_k > 0:
        kth = torch.topk(logits_NV, min(top_k, logits_NV.shape[-1])).values[:, -1:]
        logits_NV = logits_NV.masked_fill(logits_NV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_NV, order_NV = torch.sort(logits_NV, descending=False)
        drop_NV = sorted_NV.softmax(-1).cumsum(-1) <= 1 - top_p
        drop_NV[:, -1] = False
        logits_NV = logits_NV.masked_fill(drop_NV.scatter(1, order_NV, drop_NV), float("-inf"))
    return logits_NV


def choose(logits_NV, step: int, *, greedy: bool = False, **how) -> torch.Tensor:
    """Next tokens: the argmax (greedy, after min_new_tokens) or a draw from `warp`'s scores."""
    if greedy:
        return warp(logits_NV, step, **{**how, "temperature": 1.0, "top_k": 0, "top_p": 1.0}).argmax(-1)
    return draw(warp(logits_NV, step, **how).softmax(-1))


def draw(probs_NV) -> torch.Tensor:
    """One index per row with probability `probs_NV` (rows need not sum exactly to 1): inverse
    CDF with one uniform per row. Same distribution as `torch.multinomial(probs, 1)`, which
    draws an exponential per vocabulary entry (a third of a decode step on CPU at V = 111)."""
    cdf_NV = probs_NV.cumsum(-1)
    u_N1 = torch.rand(len(cdf_NV), 1, device=cdf_NV.device, dtype=cdf_NV.dtype) * cdf_NV[:, -1:]
    return torch.searchsorted(cdf_NV, u_N1, right=True).squeeze(1).clamp_(max=cdf_NV.shape[-1] - 1)


GRAPH_MIN_TOKENS = 16   # shorter calls (a tool turn's few tokens) decode eagerly: a capture syncs and
                        # empties the allocator's cache (torch.cuda.graph), more than it saves there
# Fixed shapes keep finished rows decoding; when at most half the rows are alive the batch is
# compacted and the graph captured again at the new size, but only for batches of at least
# GRAPH_COMPACT_MIN_ROWS (below that a step costs about the same whatever its rows: the weights'
# reads dominate) with at least GRAPH_COMPACT_MIN_STEPS steps left (a capture costs about two
# eager steps). Both are estimates, not yet measured (benchmarks/gpu_decode.py --stop-rate).
GRAPH_COMPACT_MIN_ROWS = 32
GRAPH_COMPACT_MIN_STEPS = 64


@torch.no_grad()
def sample(model, ids_BP, mask_BP, repeat: int, max_new: int, *, stop_ids: list[int], pad_id: int,
           stop_text=None, with_logp: bool = False, cuda_graphs: bool = False, static_shapes: bool | None = None,
           **how):
    """Completion ids [B*repeat, T] (T <= max_new; pad after a row's stop token), `repeat`
    consecutive samples per prompt. `how`: min_new, temperature, top_k, top_p, greedy (see
    `choose`). `stop_text(token_ids) -> bool` ends a row on a multi-token stop string.
    `with_logp`: also the engine's log-prob of each sampled token under logits / temperature
    (what the loss recomputes), as ([N, T] ids, [N, T] log-probs). `cuda_graphs`, on a CUDA
    device and for at least GRAPH_MIN_TOKENS tokens: decode steps with fixed shapes
    (`StaticDecode`) replayed from a CUDA graph; finished rows then stay in the batch, their
    tokens discarded, until half or fewer are alive (GRAPH_COMPACT_*): then the batch is
    compacted and a graph captured at its new size. Elsewhere the compacting loop runs (on CPU
    the fixed shapes only cost).
    `static_shapes` forces the fixed-shape path either way (tests run it on CPU)."""
    w = weights_of(model)
    B, P = ids_BP.shape
    device, N = ids_BP.device, B * repeat
    cache, rope = Cache(w, B, P + max_new, device), rope_table(w, P + max_new, device)
    logits_NV = forward(w, ids_BP, (mask_BP.cumsum(-1) - 1).clamp(min=0), mask_BP.bool(), cache, rope)
    expand = torch.arange(B, device=device).repeat_interleave(repeat)
    cache.keep(expand)                              # the prompt's cache, computed once, for its G rows
    logits_NV, pos_N = logits_NV[expand], mask_BP.sum(-1)[expand]
    out_NT = torch.full((N, max_new), pad_id, dtype=torch.long, device=device)
    logp_NT = torch.zeros(N, max_new, device=device) if with_logp else None
    row_N = torch.arange(N, device=device)          # the output row of each cache row
    alive_N = torch.ones(N, dtype=torch.bool, device=device)
    stops = torch.tensor(stop_ids, device=device)
    if static_shapes is None:
        static_shapes = cuda_graphs and device.type == "cuda" and max_new >= GRAPH_MIN_TOKENS
    graphed = StaticDecode(w, cache, rope, N, device) if static_shapes else None
    width = 0
    for t in range(max_new):
        tok_N = choose(logits_NV, t, stop_ids=stop_ids, **how)
        out_NT[row_N[alive_N], t] = tok_N[alive_N]
        if with_logp:
            lp_N = (logits_NV / how.get("temperature", 1.0)).log_softmax(-1).gather(1, tok_N[:, None]).squeeze(1)
            logp_NT[row_N[alive_N], t] = lp_N[alive_N]
        width = t + 1
        done_N = torch.isin(tok_N, stops)
        if stop_text is not None:
            done_N |= torch.tensor([bool(a) and stop_text(out_NT[r, :t + 1]) for r, a in
                                    zip(row_N.tolist(), alive_N.tolist())], device=device)
        alive_N &= ~done_N
        if not alive_N.any() or t + 1 == max_new:
            break
        if graphed is None:
            compact = (~alive_N).sum() * 8 >= len(alive_N)
        else:
            compact = len(alive_N) >= GRAPH_COMPACT_MIN_ROWS and max_new - t - 1 >= GRAPH_COMPACT_MIN_STEPS \
                and alive_N.sum() * 2 <= len(alive_N)
        if compact:                                 # finished rows leave the batch
            keep = alive_N.nonzero().squeeze(1)
            cache.keep(keep)
            row_N, tok_N, pos_N, alive_N = row_N[keep], tok_N[keep], pos_N[keep], alive_N[keep]
            if graphed is not None:
                graphed = StaticDecode(w, cache, rope, len(keep), device)
        if graphed is not None:
            logits_NV = graphed(tok_N, pos_N, cache.length)
            cache.length, pos_N = cache.length + 1, pos_N + 1
            continue
        logits_NV = forward(w, tok_N.unsqueeze(1), pos_N.unsqueeze(1), torch.ones_like(tok_N, dtype=torch.bool).unsqueeze(1), cache,
                            rope)
        pos_N = pos_N + 1
    return (out_NT[:, :width], logp_NT[:, :width]) if with_logp else out_NT[:, :width]


def fast_generate(model, tokenizer, prompts: list[str], gen, device, repeat: int = 1) -> Rollout:
    """`generate`'s drop-in: the same Rollout, each prompt prefilled once for its `repeat` rows."""
    if fast_supported(model, prompts) is not None:
        return generate(model, tokenizer, prompts, gen, device, repeat)
    ids_BP, mask_BP = encode_prompts(tokenizer, prompts, device)
    completion_NT = sample(model, ids_BP, mask_BP, repeat, gen.max_new_tokens, stop_ids=[tokenizer.eos_token_id],
                           pad_id=tokenizer.pad_token_id, min_new=gen.min_new_tokens, temperature=gen.temperature,
                           top_k=gen.top_k, top_p=gen.top_p, cuda_graphs=gen.cuda_graphs)
    return sampled_rollout(tokenizer, ids_BP.repeat_interleave(repeat, 0), mask_BP.repeat_interleave(repeat, 0),
                           completion_NT)
