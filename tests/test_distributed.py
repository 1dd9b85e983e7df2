"""Two processes (gloo on CPU): through torchrun, each rank generates for its share of the
prompts, the ranks hold identical weights afterwards and resume exactly after SIGKILL; with
DDP directly, the loss normaliser counts every rank's tokens."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrecipes import checkpoint

from .conftest import FAST


TORCHRUN = Path(sys.executable).with_name("torchrun")
needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists() and shutil.which("torchrun") is None,
                                    reason="torchrun not installed")
SLOW = ["train.steps=8", "checkpoint.every=4", "eval.at_start=false", "generation.engine=fast",
        "rewards=[{fn: accuracy}, {fn: 'tests.user_rewards:slow_length_reward', weight: 0.01}]"]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*train_args, extra=()):
    return [str(TORCHRUN) if TORCHRUN.exists() else "torchrun", "--nproc_per_node", "2", "--master_port",
            str(_free_port()), "-m", "rlrecipes", "train", "recipes/grpo.yaml", "--preset", "tiny",
            *sum((["-o", o] for o in FAST + SLOW + list(extra)), []), *train_args]


def _step_rows(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m for m in lines if "loss" in m}


@needs_torchrun
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_processes_agree_and_resume_bitwise_after_sigkill(tmp_path, mode):
    """2 ranks (gloo): identical weights on both; killed after the step-4 checkpoint and resumed,
    steps 5-8 log bitwise the uninterrupted run's loss, reward and KL (each rank restores its own
    generator state; with rank 0's on both, rank 1 would sample other completions). DDP with
    LoRA; FSDP2 (launched as accelerate would, by environment) with a full fine-tune, so that
    every weight, the optimizer state and the reference copy are sharded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU, also on a GPU box
    extra = []
    if mode == "fsdp2":
        env.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
        extra = ["model.adapter=none", "train.lr=1.0e-4"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    proc = subprocess.run(_torchrun("--output-dir", str(full), extra=extra), capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"distributed: {mode}, 2 processes" in proc.stdout
    manifest = json.loads((full / "manifest.json").read_text())
    assert (manifest["processes"], manifest["distributed"]) == (2, mode)
    sums = [json.loads((full / f"rank-{i}.json").read_text())["trainable_checksum"] for i in (0, 1)]
    assert sums[0] == sums[1]
    a = _step_rows(full)
    assert sorted(a) == list(range(1, 9))  # only rank 0 writes metrics

    run = subprocess.Popen(_torchrun("--output-dir", str(killed), extra=extra), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=env)
    marker = checkpoint.step_dir(killed, 4) / "trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    import psutil
    procs = [psutil.Process(run.pid), *psutil.Process(run.pid).children(recursive=True)]
    for p in procs:   # torchrun and both ranks (torchrun starts them in sessions of their own)
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)
    run.wait()
    assert marker.exists() and checkpoint.latest_checkpoint(killed).name < "step-000008"
    proc = subprocess.run(_torchrun("--resume", str(killed), extra=extra), capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    b = _step_rows(killed)
    assert sorted(b) == list(range(1, 9))
    if mode == "fsdp2":   # the optimizer state was written as each rank's shards, not gathered
        assert (checkpoint.step_dir(killed, 4) / "optimizer").is_dir()
        assert not (checkpoint.step_dir(killed, 4) / "optimizer.pt").exists()
    for step in range(5, 9):
        assert (a[step]["loss"], a[step]["reward_mean"], a[step]["kl"]) == \
            (b[step]["loss"], b[step]["reward_mean"], b[step]["kl"]), step


def _normaliser_rank(rank: int, port: int, data: list, out: str) -> None:
    """One rank of test_token_mean_over_ranks_equals_one_process: a DDP linear model, this rank's
    rows, the loop's normaliser; writes the gradient."""
    import torch
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from rlrecipes.algorithms.losses import token_mean
    from rlrecipes.update import global_normaliser
    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = acc.prepare(torch.nn.Linear(3, 1, dtype=torch.float64))
    x_NTD, mask_NT = data[rank]
    num, den = token_mean(model(x_NTD).squeeze(-1) ** 2, mask_NT, max_len=x_NTD.shape[1])
    acc.backward(num / global_normaliser(acc, den))
    torch.save(acc.unwrap_model(model).weight.grad, Path(out) / f"grad-{rank}.pt")
    acc.wait_for_everyone()   # then leave the group: a rank that exits with gloo's threads running aborts
    torch.distributed.destroy_process_group()


def test_token_mean_over_ranks_equals_one_process(tmp_path):
    """Token-mean with 2 ranks of unequal token counts (DDP, gloo): the gradient is the
    single-process gradient on both ranks' rows, i.e. the normaliser counts every rank's tokens
    (a per-rank normaliser would weight rank 1's few tokens as heavily as rank 0's many)."""
    import socket

    import torch
    import torch.multiprocessing as mp

    from rlrecipes.algorithms.losses import token_mean
    g = torch.Generator().manual_seed(1)
    x_NTD = torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    mask_NT = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.float64)
    data = [(x_NTD[:2], mask_NT[:2]), (x_NTD[2:], mask_NT[2:])]   # 9 tokens on rank 0, 3 on rank 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_normaliser_rank, args=(port, data, str(tmp_path)), nprocs=2, start_method="spawn")
    grads = [torch.load(tmp_path / f"grad-{r}.pt") for r in (0, 1)]

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    num, den = token_mean(model(x_NTD).squeeze(-1) ** 2, mask_NT, max_len=5)
    (num / den).backward()
    assert torch.allclose(grads[0], grads[1]) and torch.allclose(grads[0], model.weight.grad, atol=1e-12)
    model.zero_grad()
    per_rank = sum(token_mean(model(x).squeeze(-1) ** 2, m, max_len=5)[0] / m.sum() for x, m in data) / 2
    per_rank.backward()   # what a per-rank normaliser would give: not the same
    assert not torch.allclose(model.weight.grad, grads[0], atol=1e-3)


@pytest.mark.parametrize("env, field", [({"ACCELERATE_USE_DEEPSPEED": "true"}, "ACCELERATE_USE_DEEPSPEED"),
                                        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP_VERSION")])
def test_deepspeed_and_fsdp1_are_refused_in_one_line(tmp_path, env, field):
    proc = subprocess.run([sys.executable, "-m", "rlrecipes", "train", "recipes/grpo.yaml", "--preset", "tiny",
                           "--output-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WORLD_SIZE": "1", **env})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {field}" in proc.stderr and "fsdp_version 2" in proc.stderr
    assert not (tmp_path / "run").exists()


@needs_torchrun
def test_fsdp2_on_one_process_trains_as_the_plain_run(tmp_path):
    """FSDP2 asked for by the launcher with one process (one GPU: how benchmarks/gpu_check.sh
    exercises the sharded code there) shards over a mesh of one: the log and manifest say so,
    and a 2-step full fine-tune logs the plain single-process run's losses and rewards. Its
    checkpoint's optimizer shards load into a plain model as the plain run's AdamW moments."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = ["recipes/grpo.yaml", "--preset", "tiny", *sum((["-o", o] for o in [*FAST, "model.adapter=none"]), [])]
    sharded, plain = tmp_path / "fsdp", tmp_path / "plain"
    proc = subprocess.run([str(TORCHRUN) if TORCHRUN.exists() else "torchrun", "--nproc_per_node", "1",
                           "--master_port", str(_free_port()), "-m", "rlrecipes", "train", *args,
                           "--output-dir", str(sharded)], capture_output=True, text=True, timeout=600,
                          env={**env, "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: fsdp2, 1 process\n" in proc.stdout
    assert json.loads((sharded / "manifest.json").read_text())["distributed"] == "fsdp2"
    proc = subprocess.run([sys.executable, "-m", "rlrecipes", "train", *args, "--output-dir", str(plain)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((plain / "manifest.json").read_text())["distributed"] is None
    a, b = _step_rows(sharded), _step_rows(plain)
    assert sorted(a) == sorted(b) == [1, 2]
    for step in (1, 2):
        assert a[step]["reward_mean"] == b[step]["reward_mean"]
        assert abs(a[step]["loss"] - b[step]["loss"]) < 1e-5, step
    # the sharded run's optimizer is each rank's shards (DCP), never gathered; a plain process
    # loads them (DCP reshards) into the moments the plain run saved whole in optimizer.pt
    import torch
    from transformers import AutoModelForCausalLM

    from rlrecipes.sharding import OPTIMIZER_DIR, load_optimizer
    last_sharded, last_plain = checkpoint.latest_checkpoint(sharded), checkpoint.latest_checkpoint(plain)
    assert (last_sharded / OPTIMIZER_DIR).is_dir() and not (last_sharded / "optimizer.pt").exists()
    assert (last_plain / "optimizer.pt").is_file() and not (last_plain / OPTIMIZER_DIR).exists()
    model = AutoModelForCausalLM.from_pretrained(last_plain / "model")
    loaded, saved = torch.optim.AdamW(model.parameters()), torch.optim.AdamW(model.parameters())
    load_optimizer(model, loaded, last_sharded)
    load_optimizer(model, saved, last_plain)
    moments = lambda opt: [opt.state[p][k] for p in model.parameters() for k in ("exp_avg", "exp_avg_sq")]  # noqa: E731
    assert [float(opt.state[p]["step"]) for opt in (loaded, saved) for p in list(model.parameters())[:1]] == [2.0, 2.0]
    for x, y in zip(moments(loaded), moments(saved)):
        assert torch.allclose(x, y, rtol=1e-3, atol=1e-8)
