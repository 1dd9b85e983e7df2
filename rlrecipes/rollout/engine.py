"""The `fast` rollout engine (`generation.engine: fast`): our own decode loop for Qwen2/Llama-
architecture text models, behind the same interface as `generate`.

What it does differently from HF `generate`:
- each distinct prompt is prefilled once and its KV cache kept once for its G sample rows
  (`repeat`): decode attention reads it once per prompt, not once per row (`rollout/decode.py`),
  instead of prefilling the same prompt G times and keeping G copies; tool rollouts
  (`rollout/multiturn.py`) pass each row's turns so far as its own `suffix` after the prompt;
- each row's own cache is preallocated for max_new_tokens (no growing concatenations);
- rows that finished (EOS or a stop token) leave the active batch, so one long completion does
  not keep the other rows decoding;
- its forward (`rollout/decode.py`) reads effective weights taken once per policy update
  (`rollout/weights.py`): plain layers in place, LoRA merged and 4-bit layers dequantised into
  a generation copy;
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

from .decode import Cache, StaticDecode, decode, prefill, rope_table
from .generate import Rollout, encode_prompts, generate, sampled_rollout
from ..logprobs import position_ids
from ..model import lora_layer_type, unwrapped
from .weights import weights_of

_ARCHES = ("qwen2", "llama")
_STATIC_ROPE = ("default", "linear", "llama3")


def fast_supported(model, prompts=()) -> str | None:
    """None if the fast engine can run this model on these prompts, else the reason it cannot."""
    from ..vision import ImagePrompt
    base = unwrapped(model)
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


def _start(w, ids_BP, mask_BP, repeat, max_new: int, suffix):
    """The cache after the prompts (each prefilled and kept once for its rows) and the rows' own
    `suffix` tokens; the logits [N, V] the first new token is drawn from, and its positions [N]."""
    P = ids_BP.shape[1]
    S = 0 if suffix is None else suffix[0].shape[1]
    device = ids_BP.device
    cache, rope = Cache(), rope_table(w, P + S + max_new, device)
    logits_BV = prefill(w, ids_BP, mask_BP.bool(), cache, rope)
    cache.share(repeat, S + max(max_new - 1, 0))     # each row's own: its suffix, then the tokens after the first
    expand = cache.group_N
    logits_NV, pos_N = logits_BV[expand], mask_BP.sum(-1)[expand]
    if S:
        ids_NS, valid_NS = suffix[0], suffix[1].bool()
        if (valid_NS.long().diff(dim=-1) < 0).any():
            raise ValueError("sample: the suffix must be left-padded (padding before each row's tokens)")
        pos_NS = pos_N[:, None] + position_ids(valid_NS.long())
        after_NV = decode(w, ids_NS, pos_NS, cache, rope, valid_NS=valid_NS)
        logits_NV = torch.where(valid_NS[:, -1:], after_NV, logits_NV)   # a row without a suffix: its prompt's
        pos_N = pos_N + valid_NS.sum(-1)
    return cache, rope, logits_NV, pos_N


@torch.no_grad()
def sample(model, ids_BP, mask_BP, repeat, max_new: int, *, stop_ids: list[int], pad_id: int,
           stop_text=None, with_logp: bool = False, cuda_graphs: bool = False, static_shapes: bool | None = None,
           suffix=None, **how):
    """Completion ids [N, T] (T <= max_new; pad after a row's stop token), `repeat` consecutive
    samples per prompt (an int, or a count per prompt: N their sum). `suffix`: (ids, mask)
    [N, S], left-padded: each row's own tokens after its prompt (a tool rollout's turns so far),
    prefilled per row, attending to the prompt's cache, which is kept once per prompt all the
    same. `how`: min_new, temperature, top_k, top_p, greedy (see
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
    cache, rope, logits_NV, pos_N = _start(w, ids_BP, mask_BP, repeat, max_new, suffix)
    device, N = ids_BP.device, len(logits_NV)
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
        logits_NV = decode(w, tok_N[:, None], pos_N[:, None], cache, rope)
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
