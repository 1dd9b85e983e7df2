"""Sampling G completions of long prompts: HF `generate` (TRL's path: each prompt repeated G
times, so prefilled and cached G times) against the fast engine (each prompt prefilled once and
its KV cache kept once for its G rows, decode attention in two parts: rlrecipes/rollout/decode.py).
Each measurement runs in its own subprocess (peak RSS is its own); both sample exactly `--new`
tokens per row (min_new_tokens = max) from the full distribution (no top-k, no top-p).

Prints seconds per call (best of `--repeats` after a warm-up), completion tokens/s, peak
memory (RSS on CPU, allocated on CUDA) and the ratios ours / HF, plus the KV cache's size from
its shapes: B·P + N·(T - 1) token slots for ours against N·(P + T - 1) for one copy per row.
Not a test: numbers vary by machine.

    python benchmarks/long_prompt_decode.py [--prompt-lens 64,512,2048] [--prompts 4] [--group 8]
                                            [--new 32] [--hidden 256 --layers 4] [--cuda-graphs]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from subprocess_result import run_result   # benchmarks/ is on the path of a script run from it

EOS, PAD = 1, 0


def build(args):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, intermediate_size=4 * args.hidden, vocab_size=1000,
                         tie_word_embeddings=True, max_position_embeddings=8192, eos_token_id=EOS,
                         pad_token_id=PAD, bos_token_id=2)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
    with torch.device(device):   # initialised where it runs (a 0.5B shape: seconds saved on a GPU machine)
        model = Qwen2ForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    return model, device


def worker(args) -> None:
    import torch
    from rlrecipes.rollout.engine import sample
    model, device = build(args)
    B, G, P, T = args.prompts, args.group, args.prompt_len, args.new
    ids = torch.randint(3, 1000, (B, P), generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.ones_like(ids)
    if args.impl == "hf":
        call = lambda: model.generate(  # noqa: E731
            input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0), do_sample=True,
            max_new_tokens=T, min_new_tokens=T, top_k=0, top_p=1.0, pad_token_id=PAD, eos_token_id=EOS)
    else:
        call = lambda: sample(model, ids, mask, G, T, stop_ids=[EOS], pad_id=PAD, min_new=T,  # noqa: E731
                              cuda_graphs=args.cuda_graphs)
    times = []
    with torch.no_grad():
        for _ in range(args.repeats + 1):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            call()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"seconds": min(times[1:]), "memory_mb": memory, "device": device}))


def run_worker(args, impl: str, P: int) -> dict:
    cmd = [sys.executable, __file__, "--impl", impl, "--prompt-len", str(P)] + [
        x for k in ("prompts", "group", "new", "hidden", "layers", "heads", "kv_heads", "repeats")
        for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))] + (["--cuda-graphs"] if args.cuda_graphs else [])
    return run_result(cmd, f"{impl} at P={P}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt-lens", default="64,512,2048")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new", type=int, default=32)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cuda-graphs", action="store_true", help="ours: decode steps replayed from CUDA graphs (GPU)")
    p.add_argument("--impl", choices=["hf", "fast"], help=argparse.SUPPRESS)
    p.add_argument("--prompt-len", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return worker(args)
    B, G, T = args.prompts, args.group, args.new
    slot_elements = 2 * args.layers * args.kv_heads * (args.hidden // args.heads)   # keys + values
    print(f"{B} prompts x {G} samples x {T} new tokens, Qwen2 shape hidden={args.hidden} layers={args.layers} "
          f"heads={args.heads}/{args.kv_heads}, best of {args.repeats} after a warm-up"
          f"{', ours with CUDA graphs' if args.cuda_graphs else ''}")
    print(f"{'prompt':>6} {'impl':5} {'seconds':>8} {'tokens/s':>9} {'memory MB':>10} {'KV cache MB':>12}")
    for P in [int(x) for x in args.prompt_lens.split(",")]:
        hf, ours = run_worker(args, "hf", P), run_worker(args, "fast", P)
        slot_mb = slot_elements * (2 if ours["device"] == "cuda" else 4) / 2**20   # bf16 on CUDA, else fp32
        kv = {"hf": B * G * (P + T - 1) * slot_mb, "fast": (B * P + B * G * (T - 1)) * slot_mb}  # the last token is never cached
        for impl, r in (("hf", hf), ("fast", ours)):
            print(f"{P:6} {impl:5} {r['seconds']:8.3f} {B * G * T / r['seconds']:9.0f} {r['memory_mb']:10.0f} "
                  f"{kv[impl]:12.1f}")
        print(f"{P:6} ratio speed x{hf['seconds'] / ours['seconds']:.2f}  memory x{ours['memory_mb'] / hf['memory_mb']:.2f}"
              f"  KV cache x{kv['fast'] / kv['hf']:.2f}  ({ours['device']})")


if __name__ == "__main__":
    main()
