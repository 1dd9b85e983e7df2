"""Two processes through torchrun (gloo on CPU): each rank generates for its share of the
prompts and the ranks hold identical weights afterwards."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FAST


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_two_ranks_agree(tmp_path):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    args = [torchrun, "--nproc_per_node", "2", "--master_port", "29533", "-m", "rlrecipes", "train",
            "recipes/grpo.yaml", "--preset", "tiny", "--output-dir", str(tmp_path / "run"),
            *sum((["-o", o] for o in FAST), []), "-o", "eval.at_start=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on CPU, also on a GPU box
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["processes"] == 2
    sums = [json.loads((tmp_path / "run" / f"rank-{i}.json").read_text())["trainable_checksum"] for i in (0, 1)]
    assert sums[0] == sums[1]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in lines if "loss" in s] == [1, 2]  # only rank 0 writes metrics


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
