"""Decode speed on one CUDA GPU: HF `generate` (TRL's path) against our fast engine, eager and
with `cuda_graphs`, on random-init Qwen2 shapes built from configs (no hub).

1. Equality: on a small fp32 model, greedy completions of the fast engine with and without CUDA
   graphs, and of HF `generate`, token for token (left-padded prompts of different lengths).
2. Speed: the 0.5B shape in bf16, 16 prompts x 8 samples x 64 new tokens after 48-token prompts
   (bench_vs_trl.py's generation-heavy setting); the 7B shape in bf16 (what QLoRA decodes from:
   the engine dequantises the 4-bit base once per update into a bf16 copy), 16 samples x 1,024
   tokens, fast engine only, HF `generate` timed on its first 128 tokens.
Every run samples exactly `new` tokens (min_new_tokens = max), so all do the same work.
3. Early stops (`--stop-rate`, default 1/128): the 0.5B shape, 16 x 8 samples of up to 512
   tokens, each token ending its row with that probability (a random set of that share of the
   vocabulary are stop tokens; random weights sample almost uniformly), so rows finish at
   different steps, most long before 512: graphs with compaction (the default,
   GRAPH_COMPACT_*), graphs without it, and the eager compacting loop, in completion tokens/s.
Prints one JSON line per measurement and `RESULT {...}` at the end; writes --json.

    python benchmarks/gpu_decode.py [--json out.json] [--skip-7b] [--stop-rate 0.0078]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from gpu_qlora_step import SHAPES as QLORA_SHAPES   # benchmarks/ is on the path of a script run from it

SHAPES = {  # Qwen2.5-0.5B (config.json of the released model), the QLoRA step's 7B, a small test shape
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "7b": QLORA_SHAPES["7b"],
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=1024, vocab_size=1000, tie_word_embeddings=True),
}
EOS, PAD = 1, 0
SAVE: list = []   # the --json path: results are written after every measurement (a timeout keeps them)
DEV = "cuda" if torch.cuda.is_available() else "cpu"   # cpu: a dry run of the script (--dry-run)


def build(shape: str, dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, eos_token_id=EOS, pad_token_id=PAD,
                         bos_token_id=2)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(DEV):
        model = Qwen2ForCausalLM(config).eval()
    torch.set_default_dtype(old)
    return model


def prompts(B: int, P: int, vocab: int, ragged: bool):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (B, P), generator=g)
    mask = torch.ones(B, P, dtype=torch.long)
    if ragged:   # left padding, different lengths
        for b in range(B):
            mask[b, :b % 5] = 0
            ids[b, :b % 5] = PAD
    return ids.to(DEV), mask.to(DEV)


def ours(model, ids, mask, repeat, new, graphs, greedy=False):
    from rlrecipes.rollout.engine import sample
    return sample(model, ids, mask, repeat, new, stop_ids=[EOS], pad_id=PAD, min_new=0 if greedy else new,
                  greedy=greedy, cuda_graphs=graphs)


def early_stops(model, ids, mask, vocab: int, rate: float, results: dict) -> None:
    """Rows that stop at random steps: graphs with compaction, without, and the eager loop."""
    import rlrecipes.rollout.engine as engine
    stops = torch.randperm(vocab, generator=torch.Generator().manual_seed(2))[:max(1, round(rate * vocab))].tolist()
    default = engine.GRAPH_COMPACT_MIN_ROWS
    for label, graphs, min_rows in (("graphs_compacting", True, default), ("graphs_fixed", True, 10**9),
                                    ("eager", False, default)):
        engine.GRAPH_COMPACT_MIN_ROWS = min_rows
        run = lambda: (torch.manual_seed(3), engine.sample(model, ids, mask, 8, 512, stop_ids=stops, pad_id=PAD,  # noqa: E731
                                                            cuda_graphs=graphs))[1]
        timed(run, lambda out: int((out != PAD).sum()), f"0.5b_early_stops_{label}", results, warm=False)
    engine.GRAPH_COMPACT_MIN_ROWS = default
    save(results)


def hf(model, ids, mask, repeat, new, greedy=False):
    out = model.generate(input_ids=ids.repeat_interleave(repeat, 0), attention_mask=mask.repeat_interleave(repeat, 0),
                         do_sample=not greedy, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new,
                         min_new_tokens=0 if greedy else new, pad_token_id=PAD, eos_token_id=EOS)
    return out[:, ids.shape[1]:]


def timed(fn, tokens: int, label: str, results: dict, warm: bool = True) -> None:
    cuda = DEV == "cuda"
    if warm:
        fn()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    s = time.perf_counter() - t
    tokens = tokens(out) if callable(tokens) else tokens   # a callable counts the tokens of the output
    results[label] = {"seconds": round(s, 3), "tokens": tokens, "tokens_per_s": round(tokens / s), "shape_out": list(out.shape),
                      "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}
    print(json.dumps({label: results[label]}), flush=True)
    save(results)


def save(results: dict) -> None:
    if SAVE:
        with open(SAVE[0], "w") as f:
            json.dump(results, f, indent=2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json")
    p.add_argument("--skip-7b", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="small shapes only (what a CPU can run)")
    p.add_argument("--stop-rate", type=float, default=1 / 128,
                   help="per-token stop probability of the early-stop measurement (0: skip it)")
    args = p.parse_args()
    results: dict = {"gpu": torch.cuda.get_device_name() if DEV == "cuda" else None}
    SAVE.extend([args.json] if args.json else [])
    big = "small" if args.dry_run else "0.5b"

    model = build("small", torch.float32)
    ids, mask = prompts(6, 20, 1000, ragged=True)
    eager, graph, ref = (ours(model, ids, mask, 3, 48, False, True), ours(model, ids, mask, 3, 48, True, True),
                         hf(model, ids, mask, 3, 48, True))
    width = max(eager.shape[1], graph.shape[1], ref.shape[1])
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=PAD)  # noqa: E731
    results["equal_small_fp32"] = {"graphs_vs_eager": bool(torch.equal(pad(graph), pad(eager))),
                                   "eager_vs_hf": bool(torch.equal(pad(eager), pad(ref))),
                                   "lengths": sorted(set((ref != PAD).sum(1).tolist()))}
    print(json.dumps(results["equal_small_fp32"]), flush=True)
    save(results)
    del model

    model = build(big, torch.bfloat16)
    ids, mask = prompts(16, 48, SHAPES[big]["vocab_size"], ragged=False)
    tokens = 16 * 8 * 64
    timed(lambda: hf(model, ids, mask, 8, 64), tokens, "0.5b_hf_generate", results)
    timed(lambda: ours(model, ids, mask, 8, 64, False), tokens, "0.5b_fast_eager", results)
    timed(lambda: ours(model, ids, mask, 8, 64, True), tokens, "0.5b_fast_graphs", results)
    for k in ("fast_eager", "fast_graphs"):
        results[f"0.5b_{k}_vs_hf"] = round(results["0.5b_hf_generate"]["seconds"] / results[f"0.5b_{k}"]["seconds"], 2)
    if args.stop_rate > 0:
        early_stops(model, ids, mask, SHAPES[big]["vocab_size"], args.stop_rate, results)
    del model
    if DEV == "cuda":
        torch.cuda.empty_cache()

    if not (args.skip_7b or args.dry_run):
        model = build("7b", torch.bfloat16)
        ids, mask = prompts(1, 48, 152064, ragged=False)
        timed(lambda: hf(model, ids, mask, 16, 128), 16 * 128, "7b_hf_generate_128", results, warm=False)
        timed(lambda: ours(model, ids, mask, 16, 64, False), 16 * 64, "7b_fast_eager_64", results, warm=False)
        timed(lambda: ours(model, ids, mask, 16, 1024, True), 16 * 1024, "7b_fast_graphs_1024", results)
        timed(lambda: ours(model, ids, mask, 16, 1024, False), 16 * 1024, "7b_fast_eager_1024", results, warm=False)
    print("RESULT " + json.dumps(results), flush=True)
    save(results)


if __name__ == "__main__":
    main()
