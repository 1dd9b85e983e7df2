"""Tool rollouts (`generation.tools`, rlrecipes/rollout/multiturn.py) with long prompts, three
ways in one process, interleaved, the same seed for each:
  hf     `generation.engine: hf`: HF `generate` on every row's whole context each turn (the
         path TRL's generation takes: each prompt prefilled and cached once per row);
  whole  the fast engine on every row's whole context (how it ran before each prompt was
         shared across its rows in tool rollouts);
  fast   the fast engine as it runs now: each prompt prefilled and cached once per turn for its
         active rows, each row's turns so far after it as its own suffix.
A random-init Qwen2 with the tiny character tokenizer; its most frequent sampled character is
the closing call tag, so calls happen mid-sequence; the tool answers a fixed 8-word text.
Prints seconds per rollout call (best of `--repeats`) and the ratios. Not a test: numbers vary
by machine.

    python benchmarks/tool_rollouts.py [--prompt-lens 64,512,2048] [--prompts 4] [--group 8] [--new 96]
"""
from __future__ import annotations

import argparse
import time

import torch

import rlrecipes.rollout.multiturn as multiturn
from rlrecipes.config import Generation, ToolUse
from rlrecipes.registry import register
from rlrecipes.rollout.engine import sample
from rlrecipes.tiny import build_model, build_tokenizer


@register("tool", "_bench_fixed_answer")
class FixedAnswer:
    def __init__(self, task=None):
        pass

    def __call__(self, query: str) -> str:
        return "result " * 8


def whole_contexts(model, ids, mask, repeat, max_new, suffix=None, **kw):
    """`sample` as the tool loop called it before: every row's whole context prefilled alone."""
    rows = torch.arange(len(ids)).repeat_interleave(torch.as_tensor(repeat).cpu())
    seqs = [ids[r][mask[r].bool()].tolist() + ([] if suffix is None else suffix[0][n][suffix[1][n].bool()].tolist())
            for n, r in enumerate(rows.tolist())]
    return sample(model, *multiturn._left_pad(seqs, 0, ids.device), 1, max_new, **kw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt-lens", default="64,512,2048")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=256, layers=4, heads=4, kv_heads=2, intermediate_size=1024, seed=0).eval()
    model.config.max_position_embeddings = 4096   # RoPE needs no table; the tiny default (512) only warns
    torch.manual_seed(0)
    ids = tok("What is 12+34? ", return_tensors="pt")["input_ids"]
    counts = torch.bincount(sample(model, ids, torch.ones_like(ids), 8, 32, stop_ids=[tok.eos_token_id],
                                   pad_id=tok.pad_token_id).flatten(), minlength=len(tok))
    close = next(tok.decode([t]) for t in counts.argsort(descending=True).tolist()
                 if tok.decode([t]).strip() and t not in tok.all_special_ids)
    spec = ToolUse(tool={"fn": "_bench_fixed_answer"}, max_turns=4, call=("<search>", close))
    gen = Generation(max_new_tokens=args.new, temperature=1.0)
    print(f"{args.prompts} prompts x {args.group} samples, up to {args.new} tokens with tool turns, Qwen2 hidden 256, "
          f"4 layers, 4/2 heads, fp32, best of {args.repeats}")
    for P in [int(x) for x in args.prompt_lens.split(",")]:
        prompts = [("Add the two numbers below and answer. " * 100)[:P - 8] + f"{i}+{i}=?" for i in range(args.prompts)]
        best, turns = {}, None
        for r in range(args.repeats):
            for name, engine, fn in (("hf", "hf", sample), ("whole", "fast", whole_contexts), ("fast", "fast", sample)):
                multiturn.sample = fn
                torch.manual_seed(r)
                start = time.perf_counter()
                rollout = multiturn.ToolRollouts(spec, engine=engine)(model, tok, prompts, gen, "cpu", repeat=args.group)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
                turns = rollout.stats["turns"].float().mean().item()
        multiturn.sample = sample
        print(f"prompt {P:5}: hf {best['hf']:.3f} s, fast on whole contexts {best['whole']:.3f} s, fast {best['fast']:.3f} s"
              f"  -> x{best['hf'] / best['fast']:.2f} vs hf, x{best['whole'] / best['fast']:.2f} vs whole contexts"
              f"  ({turns:.2f} turns per row)")


if __name__ == "__main__":
    main()
