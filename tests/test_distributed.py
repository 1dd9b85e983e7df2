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
