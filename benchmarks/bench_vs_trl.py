"""rlrecipes vs TRL's GRPOTrainer on an identical tiny config, each in its own subprocess.

Same model (the tiny Qwen2 of the given shape, same init), 16 prompts x 8 completions per step,
fixed-length generation (min_new_tokens = max_new_tokens = 16, so both do the same work),
beta 0.04 (both compute reference log-probs), one update per step, full fine-tune and LoRA,
gradient checkpointing off on both sides unless --gradient-checkpointing (TRL's default is on;
an earlier version of this script left it on for TRL alone, which flattered our speed).
Prints completions/s and completion tokens/s (B*G*T over the median step time; the first step is
a warm-up and not timed), the share of the step spent generating (TRL: its generate() calls
timed; ours: the step's phases from metrics.jsonl's time/*), peak RSS of each process, and the
ratios rlrecipes / TRL. Not a test: numbers vary by machine.

`--gen-heavy` is the generation-bound setting: 64 new tokens after 48-token prompts (the sums
behind a fixed preamble, the same rows for both). `--engine fast|hf` picks our rollout engine.

    python benchmarks/bench_vs_trl.py [--steps 6] [--hidden 64 --layers 2] [--device cpu|cuda]
                                      [--gen-heavy] [--engine fast|hf] [--cuda-graphs]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from subprocess_result import run_result   # benchmarks/ is on the path of a script run from it

B, G = 16, 8
PHASES = ("generate", "score", "reference", "update", "other")   # our metrics' time/<phase>
PREAMBLE = "Add the two numbers below and answer. "


def rows_for(args, n: int) -> list[dict]:
    """The arith rows both sides train on; with --prompt-len, prompts padded to that many
    characters (= tokens of the tiny tokenizer) by a fixed preamble."""
    from rlrecipes.tasks.arith import Arith
    rows = [{"prompt": r["prompt"], "answer": r["answer"]} for r in Arith().synthetic("train", n, seed=0)]
    if args.prompt_len:
        for r in rows:
            r["prompt"] = (PREAMBLE * 4)[:max(0, args.prompt_len - len(r["prompt"]))] + r["prompt"]
    return rows


def shape(args) -> dict:
    heads = args.heads or max(2, args.hidden // 32)
    return dict(hidden_size=args.hidden, layers=args.layers, heads=heads,
                kv_heads=args.kv_heads or max(1, heads // 2),
                intermediate_size=args.intermediate or args.hidden * 4, vocab_size=args.vocab, seed=0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def run_ours(args, mode: str, out_dir: Path) -> dict:
    from rlrecipes.config import load_recipe
    from rlrecipes.run import train
    s = {k: v for k, v in shape(args).items() if v is not None}
    T = args.new_tokens
    data = out_dir / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows_for(args, B * (args.steps + 1) + 16)))
    overrides = [f"data.source={{path: {data}}}", "data.train_size=null", f"generation.engine={args.engine}",
                 f"train.prefix_sharing={str(args.prefix_sharing).lower()}",
                 f"generation.cuda_graphs={str(args.cuda_graphs).lower()}",
        "model.name_or_path=tiny", f"model.tiny={json.dumps(s)}", f"model.adapter={mode}",
        "stages=[{kind: rl}]", "rewards=[{fn: accuracy}]", "data.test_size=16",
        f"train.steps={args.steps}", f"train.prompts_per_step={B}", f"train.group_size={G}",
        "train.lr=1.0e-5", "train.micro_batch_size=null", "algorithm.kl.beta=0.04",
        "algorithm.loss.aggregation=seq_mean_token_mean",
        f"generation.max_new_tokens={T}", f"generation.min_new_tokens={T}",
        "eval.at_start=false", "eval.samples=1", "eval.k=[1]", "eval.limit=16",
        f"model.dtype={'bfloat16' if args.device == 'cuda' else 'float32'}",
        f"model.gradient_checkpointing={str(args.gradient_checkpointing).lower()}"]
    recipe = load_recipe("recipes/grpo.yaml", None, overrides)
    train(recipe, str(out_dir / "ours"), say=lambda *a, **k: None)
    lines = [json.loads(line) for line in (out_dir / "ours" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "step_time" in m][1:]  # eval lines have none; the first is a warm-up
    step_time = statistics.median(m["step_time"] for m in steps)
    phases = {k: statistics.median(m[f"time/{k}"] for m in steps) for k in PHASES[:-1]}
    phases["other"] = max(0.0, step_time - sum(phases.values()))
    return {"completions_per_s": B * G / step_time, "gen_share": phases["generate"] / step_time, "phases": phases}


def run_trl(args, mode: str, out_dir: Path) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlrecipes.rewards.math import accuracy
    from rlrecipes.tiny import tiny_path

    path = tiny_path(**shape(args))
    T = args.new_tokens
    data = datasets.Dataset.from_list(rows_for(args, B * (args.steps + 1) + 16)[:B * (args.steps + 1)])
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig
        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    config = GRPOConfig(
        output_dir=str(out_dir / "trl"), per_device_train_batch_size=B * G, num_generations=G,
        gradient_accumulation_steps=1, max_completion_length=T, learning_rate=1e-5, beta=0.04,
        max_steps=args.steps, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=args.device == "cpu", bf16=args.device == "cuda", temperature=1.0,
        generation_kwargs={"min_new_tokens": T}, seed=0, disable_tqdm=True,
        gradient_checkpointing=args.gradient_checkpointing)  # TRL's default is True; ours False
    ends: list[float] = []
    gen: list[float] = []   # seconds in the policy's generate(), one call per step here

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

    trainer = GRPOTrainer(model=model, reward_funcs=accuracy, args=config, train_dataset=data,
                          processing_class=AutoTokenizer.from_pretrained(path), peft_config=peft_config,
                          callbacks=[Clock()])
    plain_generate = trainer.model.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        out = plain_generate(*a, **k)
        gen.append(time.perf_counter() - t)
        return out

    trainer.model.generate = timed_generate
    trainer.train()
    step_time = statistics.median(b - a for a, b in zip(ends, ends[1:]))
    result = {"completions_per_s": B * G / step_time}
    if len(gen) == len(ends):  # one generate per step, as configured: its share is meaningful
        result["gen_share"] = statistics.median(gen[1:]) / step_time
        result["phases"] = {"generate": statistics.median(gen[1:]),
                            "other": max(0.0, step_time - statistics.median(gen[1:]))}
    return result


def worker(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fn = run_ours if args.worker == "rlrecipes" else run_trl
        result = fn(args, args.mode, Path(tmp))
    result["peak_rss_mb"] = peak_rss_mb()
    import torch
    if torch.cuda.is_available():
        result["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print("RESULT " + json.dumps(result))


def run_worker(args, impl: str, mode: str) -> dict:
    """One measurement in a fresh subprocess (so imports and peak RSS are its own)."""
    cmd = [sys.executable, __file__, "--worker", impl, "--mode", mode, "--steps", str(args.steps),
           "--hidden", str(args.hidden), "--layers", str(args.layers), "--device", args.device,
           "--engine", args.engine, "--new-tokens", str(args.new_tokens), "--prompt-len", str(args.prompt_len)]
    if args.prefix_sharing:
        cmd.append("--prefix-sharing")
    if args.cuda_graphs:
        cmd.append("--cuda-graphs")
    if args.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    for flag in ("heads", "kv_heads", "intermediate", "vocab"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return run_result(cmd, f"{impl} ({mode})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--vocab", type=int, default=None, help="pad the embedding to this size")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--modes", default="none,lora", help="adapters to compare: none (full) and/or lora")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs per (impl, mode), interleaved; the fastest counts (host noise only slows)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="turn it on for both (TRL turns it on by default; off here so both do the same work)")
    p.add_argument("--engine", choices=["fast", "hf"], default="fast", help="our rollout engine")
    p.add_argument("--gen-heavy", action="store_true", help="64 new tokens after 48-token prompts")
    p.add_argument("--prefix-sharing", action="store_true", help="ours: train.prefix_sharing (Prefix Grouper)")
    p.add_argument("--cuda-graphs", action="store_true", help="ours: generation.cuda_graphs (fast engine, CUDA)")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=0, help="pad prompts to this many tokens (0: as the task makes them)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", choices=["rlrecipes", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.gen_heavy:
        args.new_tokens, args.prompt_len = 64, 48
    if args.worker:
        return worker(args)
    results = {}
    for _, mode, impl in [(r, m, i) for r in range(args.repeats) for m in args.modes.split(",")
                          for i in ("rlrecipes", "trl")]:
        new, key = run_worker(args, impl, mode), f"{impl}/{mode}"
        old = results.setdefault(key, new)
        results[key] = {**(old if old["completions_per_s"] >= new["completions_per_s"] else new),
                        "peak_rss_mb": min(old["peak_rss_mb"], new["peak_rss_mb"])}
        if "gpu_mem_peak_gb" in new:
            results[key]["gpu_mem_peak_gb"] = min(old["gpu_mem_peak_gb"], new["gpu_mem_peak_gb"])
    T = args.new_tokens
    print(f"B={B} prompts x G={G} completions x T={T} tokens after {args.prompt_len or 'task'}-token prompts, "
          f"engine {args.engine}{' + CUDA graphs' if args.cuda_graphs else ''}, prefix sharing {'on' if args.prefix_sharing else 'off'}, "
          f"{args.steps} steps (first untimed), "
          f"best of {args.repeats} runs, hidden={args.hidden} layers={args.layers}, device={args.device}, "
          f"gradient checkpointing={'on' if args.gradient_checkpointing else 'off'} (both)")
    print(f"{'mode':6} {'impl':10} {'compl/s':>10} {'tokens/s':>10} {'peak RSS MB':>12} {'generating':>10}")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    summary = {"config": config | {"B": B, "G": G, "T": T}, "results": results, "ratios": {}}
    for mode in args.modes.split(","):
        ours, trl = results[f"rlrecipes/{mode}"], results[f"trl/{mode}"]
        for impl, r in (("rlrecipes", ours), ("trl", trl)):
            share = f"{r['gen_share']:.0%}" if "gen_share" in r else ""
            print(f"{mode:6} {impl:10} {r['completions_per_s']:10.1f} {r['completions_per_s'] * T:10.0f} "
                  f"{r['peak_rss_mb']:12.0f} {share:>10}")
        ratio = {"speed": ours["completions_per_s"] / trl["completions_per_s"],
                 "rss": ours["peak_rss_mb"] / trl["peak_rss_mb"]}
        if "gpu_mem_peak_gb" in ours and "gpu_mem_peak_gb" in trl:
            ratio["gpu_mem"] = ours["gpu_mem_peak_gb"] / trl["gpu_mem_peak_gb"]
            print(f"{mode:6} ratio      peak GPU memory x{ratio['gpu_mem']:.2f} "
                  f"({ours['gpu_mem_peak_gb']:.2f} vs {trl['gpu_mem_peak_gb']:.2f} GiB)")
        summary["ratios"][mode] = ratio
        for impl, r in (("rlrecipes", ours), ("trl", trl)):
            if "phases" in r:
                print(f"{mode:6} {impl:10} seconds per step: " + ", ".join(
                    f"{k} {v:.3f}" for k, v in r["phases"].items()))
        print(f"{mode:6} ratio      speed x{ratio['speed']:.2f} (target >= {2.5 if args.gen_heavy else 1.5})   "
              f"peak RSS x{ratio['rss']:.2f} (target <= 0.8)")
        if "phases" in ours:   # what the speed ratio could reach if our generation took no time
            rest = sum(v for k, v in ours["phases"].items() if k != "generate")
            ratio["bound_free_generation"] = (B * G / trl["completions_per_s"]) / rest
            print(f"{mode:6} bound      speed x{ratio['bound_free_generation']:.2f} if our generation took no time "
                  f"(TRL's step / our {rest:.3f} s of scoring, reference and update)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
