"""Peak memory per rank of a full fine-tune: one process, 2-rank DDP, 2-rank FSDP2 (issue 17).

FSDP2 (`rlrecipes/sharding.py`) shards weights, gradients, AdamW state and the reference copy
over the ranks, but runs rollouts and eval inside `gathered(model)`: every parameter whole on
every rank for that time. This script measures what that costs against what sharding saves.

Each mode is its own launch on CPU (gloo; CUDA hidden): `torchrun --nproc_per_node 2` for DDP
and for FSDP2 (`ACCELERATE_USE_FSDP=true FSDP_VERSION=2`), plain `python` for the one-process
reference. Every rank runs this file as a thin wrapper around `rlrecipes train` (the library is
not changed): it wraps `sharding.gathered`, the loop's checkpoint writers and `full_state` to
label phases, and records each phase's peak RSS (the kernel's high-water mark VmHWM, reset
through /proc/self/clear_refs at each phase change; where that is refused only the whole run's
`ru_maxrss` is reported). Phases: load (model, reference copy, sharding, up to the first
rollout), generate (inside `gathered`: rollouts and eval), update (scoring, reference and
policy passes, backward, AdamW), checkpoint (the last step's checkpoint and `final/`, which
every run writes). `gather` is the RSS increase on entering `gathered` (max over calls).

Beside the measurements it prints the bytes expected per rank by arithmetic (fp32, P params,
N ranks): weights, reference copy, gradients 4P each and AdamW 8P, divided by N under FSDP2;
DDP's gradient buckets 4P; FSDP2's gathered parameters 4P during generation; FSDP2's rank 0
holds the full weights (4P) while writing a checkpoint (each rank writes its own optimizer
shards; before 2026-12-04 rank 0 gathered AdamW's state too, 12P in all). Not a test.

    python benchmarks/fsdp_memory.py [--hidden 768 --layers 12] [--steps 3] [--modes plain,ddp,fsdp2]
                                     [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 2**20
PHASES = ("load", "generate", "update", "checkpoint")


# ---- the wrapper each rank runs -------------------------------------------------------------

def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class Meter:
    """Peak RSS per phase: at each change, the high-water mark is read, credited to the phase
    that ends, and reset to the current RSS (clear_refs 5)."""

    def __init__(self):
        self.phase, self.peaks_kb, self.gather_kb = "load", {}, []
        self.base_kb = _status_kb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = True
        except OSError:
            self.resettable = False

    def switch(self, phase: str) -> None:
        if self.resettable:
            self.peaks_kb[self.phase] = max(self.peaks_kb.get(self.phase, 0), _status_kb("VmHWM"))
            Path("/proc/self/clear_refs").write_text("5")
        self.phase = phase

    @contextlib.contextmanager
    def during(self, phase: str, after: str | None = None):
        before = self.phase
        self.switch(phase)
        try:
            yield
        finally:
            self.switch(after or before)

    def result(self) -> dict:
        self.switch(self.phase)
        peak = max(self.peaks_kb.values()) if self.resettable else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"rank": int(os.environ.get("RANK", 0)), "peak_mb": peak / 1024, "base_mb": self.base_kb / 1024,
                "phases_mb": {k: v / 1024 for k, v in self.peaks_kb.items()},
                "gather_mb": max(self.gather_kb, default=0) / 1024}


def instrument(meter: Meter) -> None:
    """Label phases by wrapping what the loop looks up at call time (module attributes)."""
    from rlrecipes import loop, sharding
    plain_gathered = sharding.gathered

    @contextlib.contextmanager
    def gathered(model):
        with meter.during("generate", after="update"):
            before = _status_kb("VmRSS")
            with plain_gathered(model) as whole:
                meter.gather_kb.append(_status_kb("VmRSS") - before)
                yield whole

    def labelled(fn):   # stays "checkpoint" until the next rollout: freed memory may stay resident
        def call(*a, **k):
            with meter.during("checkpoint", after="checkpoint"):
                return fn(*a, **k)
        return call

    sharding.gathered = gathered
    sharding.full_state = labelled(sharding.full_state)
    loop.save_checkpoint = labelled(loop.save_checkpoint)
    loop.save_pretrained = labelled(loop.save_pretrained)


def worker(out_dir: Path, cli_args: list[str]) -> None:
    """`rlrecipes <cli_args>` in this process; writes rank-N.json with the peaks."""
    from rlrecipes import loop, run  # noqa: F401  torch, transformers, accelerate: `base` includes them
    from rlrecipes.cli import app
    meter = Meter()
    instrument(meter)
    code = 0
    try:
        app(args=cli_args, prog_name="rlrecipes")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    result = {**meter.result(), "exit_code": code}
    (out_dir / f"rank-{result['rank']}.json").write_text(json.dumps(result))
    sys.exit(code)


# ---- the driver ---------------------------------------------------------------------------

def shape(args) -> dict:
    heads = args.heads or max(2, args.hidden // 64)
    return dict(hidden_size=args.hidden, layers=args.layers, heads=heads, kv_heads=args.kv_heads or max(1, heads // 3),
                intermediate_size=args.intermediate or args.hidden * 4, seed=0)


def count_params(path: Path) -> int:
    """Parameters of the built tiny model (tied embeddings once), on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return sum(p.numel() for p in model.parameters())


def overrides(args, s: dict) -> list[str]:
    return ["model.name_or_path=tiny", f"model.tiny={json.dumps(s)}", "model.adapter=none", "model.dtype=float32",
            "stages=[{kind: rl}]", f"train.steps={args.steps}", "train.prompts_per_step=4", "train.group_size=2",
            "train.lr=1.0e-5", "train.micro_batch_size=null", "algorithm.kl.beta=0.04",
            f"generation.max_new_tokens={args.new_tokens}", "eval.at_start=false", "eval.samples=1",
            "eval.k=[1]", "eval.limit=4", "data.test_size=16", "checkpoint.every=0"]


def launch(mode: str, nproc: int, cli: list[str], out: Path, mmap_threshold: int | None) -> float:
    """One run; returns its wall seconds."""
    me = [str(Path(__file__).resolve()), "--worker", str(out), "--"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    if mmap_threshold:   # glibc: blocks this large are mmapped and go back to the kernel when freed
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    if mode == "plain":
        cmd = [sys.executable, *me, *cli]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--nproc_per_node", str(nproc), "--master_port", str(port), *me, *cli]
        if mode == "fsdp2":
            env.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1200)
    if proc.returncode:
        sys.exit(f"{mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def expected_mb(mode: str, nproc: int, P: int, rank: int) -> dict:
    """Bytes per rank by arithmetic (fp32), in MB, in the steady state after the first step."""
    n = nproc if mode == "fsdp2" else 1
    w = 4 * P / n / MB                                  # policy weights; reference copy and grads alike
    buckets = 4 * P / MB if mode == "ddp" else 0.0      # DDP's flat gradient buckets, kept between steps
    gathered = 4 * P / MB if mode == "fsdp2" else 0.0   # the whole parameters during generation
    full_ckpt = 4 * P / MB if mode == "fsdp2" and rank == 0 else 0.0   # the full weights on rank 0
    return {"weights": w, "reference": w, "grads": w, "adamw": 2 * w, "ddp_buckets": buckets,
            "gathered": gathered, "generate": w + w + 2 * w + buckets + gathered,
            "update": w + w + w + 2 * w + buckets, "checkpoint_extra": full_ckpt}


def measure(args, s: dict, P: int) -> dict:
    cli = ["train", "recipes/grpo.yaml", "--preset", "tiny", *sum((["-o", o] for o in overrides(args, s)), [])]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            nproc = 1 if mode == "plain" else args.nproc
            out = Path(tmp) / mode
            out.mkdir()
            seconds = launch(mode, nproc, cli + ["--output-dir", str(out / "run")], out, args.mmap_threshold)
            ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(nproc)]
            for r in ranks:
                r["expected_mb"] = expected_mb(mode, nproc, P, r["rank"])
            results[mode] = {"processes": nproc, "seconds": seconds, "ranks": ranks}
            print(f"{mode}: {seconds:.0f} s", file=sys.stderr)
    return results


def report(args, s: dict, P: int, results: dict) -> None:
    e = expected_mb("plain", 1, P, 0)
    print(f"full fine-tune of a {P / 1e6:.1f}M-parameter tiny Qwen2 ({json.dumps(s)}), fp32, CPU/gloo, "
          f"{args.steps} RL steps x 4 prompts x 2 completions x {args.new_tokens} tokens, KL on (reference copy), "
          f"glibc {'MALLOC_MMAP_THRESHOLD_=' + str(args.mmap_threshold) if args.mmap_threshold else 'default malloc'}")
    print(f"arithmetic per whole copy: weights {e['weights']:.0f} MB, grads {e['grads']:.0f}, AdamW {e['adamw']:.0f}, "
          f"reference {e['reference']:.0f}")
    head = f"{'mode':6} {'rank':>4} {'peak':>6} " + " ".join(f"{p:>10}" for p in PHASES) + \
        f" {'gather':>7} {'base':>5} | {'exp gen':>7} {'exp upd':>7}"
    print("peak RSS per phase, MB (base: RSS after imports; gather: RSS added on entering gathered;"
          " exp: arithmetic, without libraries and activations)")
    print(head)
    for mode, res in results.items():
        for r in res["ranks"]:
            ph = " ".join(f"{r['phases_mb'].get(p, float('nan')):10.0f}" for p in PHASES)
            x = r["expected_mb"]
            print(f"{mode:6} {r['rank']:4d} {r['peak_mb']:6.0f} {ph} {r['gather_mb']:7.0f} {r['base_mb']:5.0f} | "
                  f"{x['generate']:7.0f} {x['update']:7.0f}")
    if "ddp" in results and "fsdp2" in results:
        pairs = zip(results["ddp"]["ranks"], results["fsdp2"]["ranks"])
        print("fsdp2 / ddp peak RSS: " + ", ".join(f"rank {d['rank']} x{f['peak_mb'] / d['peak_mb']:.2f}"
                                                   for d, f in pairs))
        f = results["fsdp2"]["ranks"]
        print(f"gathered: {max(r['gather_mb'] for r in f):.0f} MB measured on entering, "
              f"{f[0]['expected_mb']['gathered']:.0f} by arithmetic (4P); rank 0 writing a checkpoint: "
              f"+{f[0]['expected_mb']['checkpoint_extra']:.0f} by arithmetic (4P)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--modes", default="plain,ddp,fsdp2")
    p.add_argument("--mmap-threshold", type=int, default=None,
                   help="set glibc's MALLOC_MMAP_THRESHOLD_ (e.g. 262144) so that freed tensors leave RSS: "
                        "RSS then follows live memory (default: glibc's own, which keeps freed heap resident)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    if "--worker" in sys.argv:   # a rank: everything after `--` is rlrecipes' command line
        split = sys.argv.index("--")
        return worker(p.parse_args(sys.argv[1:split]).worker, sys.argv[split + 1:])
    args = p.parse_args()
    from rlrecipes.tiny import tiny_path
    s = shape(args)
    P = count_params(tiny_path(**s))   # built once here, so no rank builds it (or counts its building)
    results = measure(args, s, P)
    report(args, s, P, results)
    if args.json:
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "worker"}
        args.json.write_text(json.dumps({"config": config, "shape": s, "params": P, "results": results}, indent=2))


if __name__ == "__main__":
    main()
