"""Memory and time of the training log-prob pass with a real vocabulary: through the LM head
(`rlrecipes/head.py`, the default) against through the logits (`chosen_logprobs` on the
model's [N, T, V] output, what rlrecipes did before 2026-12-04 and what TRL does).

One micro-batch of G completions per prompt, forward and backward of the summed log-probs,
with prefix sharing on and off, full fine-tune and LoRA, each in its own subprocess. The model
is the tiny Qwen2 of the given width with its embedding padded to the vocabulary size (151,936
by default: Qwen2.5's), so the vocabulary-sized tensors dominate as they do at real scale.
Prints the peak memory added by the pass (CPU: the RSS high-water mark over the RSS before it,
VmHWM reset through /proc/self/clear_refs; CUDA: max_memory_allocated over allocated before)
and the pass's seconds (median of --repeats after one warm-up), with the ratios. Not a test.

    python benchmarks/head_memory.py [--rows 16] [--new-tokens 64] [--prompt-len 48] [--vocab 151936]
                                     [--hidden 64] [--device cpu|cuda] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from subprocess_result import run_result   # benchmarks/ is on the path of a script run from it


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def worker(args) -> dict:
    import torch

    import rlrecipes.head as head
    import rlrecipes.logprobs as lp
    from rlrecipes.tiny import build_model, build_tokenizer
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(build_tokenizer(), hidden_size=args.hidden, layers=2, heads=2, kv_heads=1,
                        intermediate_size=4 * args.hidden, vocab_size=args.vocab).to(device, dtype).train()
    if args.adapter == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    if args.path == "logits":
        head.fused_head = lambda model: None
    g = torch.Generator().manual_seed(0)
    G = 8
    prompts = torch.randint(20, 90, (args.rows // G, args.prompt_len), generator=g).repeat_interleave(G, 0)
    comp = torch.randint(20, 90, (args.rows, args.new_tokens), generator=g)
    batch = [t.to(device) for t in (prompts, torch.ones_like(prompts), comp, torch.ones_like(comp))]

    def step():
        logp, _ = lp.token_logprobs(model, *batch, 1.0, entropy="log", share_prefix=args.prefix_sharing)
        logp.sum().backward()
        model.zero_grad(set_to_none=True)

    step()   # warm-up: gradient buffers, allocator caches
    times, peaks = [], []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            _reset_peak()
            before = _kb("VmRSS") * 1024
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() - before)
        else:
            peaks.append(_kb("VmHWM") * 1024 - before)
        times.append(time.perf_counter() - t)
    return {"seconds": statistics.median(times), "peak_mb": max(peaks) / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16, help="completions in the micro-batch (8 per prompt)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=48)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", type=Path)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", choices=["head", "logits"], help=argparse.SUPPRESS)
    p.add_argument("--adapter", choices=["none", "lora"], help=argparse.SUPPRESS)
    p.add_argument("--prefix-sharing", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return
    print(f"{args.rows} completions x {args.new_tokens} tokens after {args.prompt_len}-token prompts, vocabulary "
          f"{args.vocab}, hidden {args.hidden}, {args.device}; peak memory added by one forward + backward")
    results = {}
    for adapter in ("none", "lora"):
        for sharing in (False, True):
            row = {}
            for path in ("logits", "head"):
                cmd = [sys.executable, __file__, "--worker", "--path", path, "--adapter", adapter,
                       *(f"--{k}={v}" for k, v in (("rows", args.rows), ("new-tokens", args.new_tokens),
                                                   ("prompt-len", args.prompt_len), ("vocab", args.vocab),
                                                   ("hidden", args.hidden), ("repeats", args.repeats),
                                                   ("device", args.device)))]
                if sharing:
                    cmd.append("--prefix-sharing")
                row[path] = run_result(cmd, f"{path} ({adapter})")
            label = f"{'full' if adapter == 'none' else 'lora'}, prefix sharing {'on' if sharing else 'off'}"
            results[label] = row
            a, b = row["logits"], row["head"]
            print(f"{label:28s} logits {a['peak_mb']:8.0f} MB {a['seconds']:6.3f} s   head {b['peak_mb']:8.0f} MB "
                  f"{b['seconds']:6.3f} s   memory x{b['peak_mb'] / a['peak_mb']:.2f}  time x{b['seconds'] / a['seconds']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
