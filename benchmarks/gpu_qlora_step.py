"""One QLoRA GRPO step of a 7B-shaped (or 3B-shaped) random-init Qwen2 on one CUDA GPU.

Builds the model from a config (no hub) in bf16 on the GPU, saves it with the tiny character
tokenizer, reloads it 4-bit NF4 + LoRA through rlrecipes, and runs one RL step of G (16)
completions of exactly 1,024 tokens (KL on, so the reference pass runs too) with the chosen
rollout engine (`--engine fast|hf`). Prints JSON:
peak GPU memory, generation tokens/s, step seconds.

    python benchmarks/gpu_qlora_step.py --shape 7b --workdir /tmp/qlora7b [--engine fast|hf] [--cuda-graphs] [--completions 16]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

SHAPES = {  # Qwen2.5-7B and Qwen2.5-3B (config.json of the released models)
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False),
    "3b": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
               intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True),
}


def build(shape: str, workdir: Path) -> float:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlrecipes.tiny import build_tokenizer
    t0 = time.perf_counter()
    tok = build_tokenizer()
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(workdir)
    tok.save_pretrained(workdir)
    del model
    torch.cuda.empty_cache()
    return time.perf_counter() - t0


def step(workdir: Path, engine: str, completions: int, graphs: bool) -> dict:
    from rlrecipes.config import load_recipe
    from rlrecipes.run import train
    overrides = [f"model.name_or_path={workdir}", "model.adapter=qlora", "model.gradient_checkpointing=true",
                 "stages=[{kind: rl}]", "rewards=[{fn: accuracy}]", "data.test_size=8",
                 "train.steps=1", "train.prompts_per_step=1", f"train.group_size={completions}",
                 f"generation.engine={engine}", f"generation.cuda_graphs={str(graphs).lower()}",
                 "train.micro_batch_size=2", "algorithm.kl.beta=0.04",
                 "generation.max_new_tokens=1024", "generation.min_new_tokens=1024",
                 "eval.at_start=false", "eval.at_end=false", "eval.samples=1", "eval.k=[1]"]
    recipe = load_recipe("recipes/grpo.yaml", None, overrides)
    torch.cuda.reset_peak_memory_stats()
    train(recipe, str(workdir / "run"), say=lambda *a, **k: None)
    m = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").read_text().splitlines()
         if "step_time" in line][-1]
    return {"step_s": m["step_time"], "gen_tokens_per_s": m["gen_tokens_per_s"],
            "gpu_mem_peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "completion_len": m["completion_len"], "loss": m["loss"]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/rlrecipes_qlora"))
    p.add_argument("--engine", choices=["fast", "hf"], default="fast")
    p.add_argument("--cuda-graphs", action="store_true", help="generation.cuda_graphs (fast engine)")
    p.add_argument("--completions", type=int, default=16, help="G completions of 1,024 tokens for the one prompt")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {"shape": args.shape, "engine": args.engine, "cuda_graphs": args.cuda_graphs, "completions": args.completions,
              "build_and_save_s": build(args.shape, args.workdir)}
    result.update(step(args.workdir, args.engine, args.completions, args.cuda_graphs))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
