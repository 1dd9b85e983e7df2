"""The tiny preset trains for a few steps: parameters move, the loss is finite, and every
metric the issue names is logged."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlrecipes.config import load_recipe
from rlrecipes.run import train
from rlrecipes.trainer import lr_lambda

from .conftest import FAST

METRICS = {"step", "loss", "reward_mean", "reward_std", "reward/accuracy", "reward/format", "kl",
           "clip_frac", "entropy", "completion_len", "lr", "step_time"}


def _metrics(run_dir):
    """The per-step lines of metrics.jsonl (eval-only lines have no loss)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if "loss" in m]


def test_tiny_lora_run_moves_adapter_and_logs_everything(tmp_path):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST)
    summary = train(r, str(tmp_path / "run"), say=lambda *a: None)
    run = tmp_path / "run"
    rows = _metrics(run)
    assert [m["step"] for m in rows] == [1, 2]
    assert METRICS <= set(rows[0])
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["kl"]) for m in rows)
    adapter = load_file(run / "final" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: it moved
    assert {"start", "end"} <= set(summary["eval"]) and "pass@1" in summary["eval"]["end"]
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["eval"]["end"]["problems"] == 8
    assert (run / "sft-model" / "config.json").exists() and (run / "recipe.yaml").exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["versions"]["torch"]


def test_full_finetune_with_epochs_minibatches_and_microbatches(tmp_path):
    overrides = FAST + ["model.adapter=none", "train.ppo_epochs=2", "train.mini_batches=2",
                        "train.micro_batch_size=4", "algorithm.loss.aggregation=token_mean",
                        "eval.at_start=false"]
    r = load_recipe("recipes/grpo.yaml", "tiny", overrides)
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    rows = _metrics(tmp_path / "run")
    assert all(math.isfinite(m["loss"]) for m in rows)
    from transformers import AutoModelForCausalLM
    before = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "sft-model")
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)
    # ppo_epochs=2 makes the second epoch off-policy: some ratio moved away from 1
    assert any(abs(m["ratio_mean"] - 1.0) > 0 for m in rows)


def test_lr_schedule_warmup_then_cosine():
    r = load_recipe("recipes/grpo.yaml", None, ["train.warmup_steps=2", "train.steps=6",
                                                "train.schedule=cosine"])
    f = lr_lambda(r.train)
    assert [round(f(s), 4) for s in range(7)] == [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464, 0.0]


def test_dapo_and_dr_grpo_tiny_presets_run(tmp_path):
    for name in ("dapo", "dr_grpo"):
        r = load_recipe(f"recipes/{name}.yaml", "tiny", FAST + ["eval.at_start=false"])
        train(r, str(tmp_path / name), say=lambda *a: None)
        assert all(math.isfinite(m["loss"]) for m in _metrics(tmp_path / name))


@pytest.mark.slow
def test_grpo_tiny_preset_learns(tmp_path):
    """The README's main command: pass@1 must rise by expect.tiny.min_gain (0.10) over RL."""
    r = load_recipe("recipes/grpo.yaml", "tiny")
    summary = train(r, str(tmp_path / "run"), say=print)
    start, end = summary["eval"]["start"]["pass@1"], summary["eval"]["end"]["pass@1"]
    print(f"pass@1 {start:.3f} -> {end:.3f}")
    assert end - start >= r.expect.tiny["min_gain"]


def test_oblr_snr_factor_scales_the_optimizer_step(tmp_path):
    """OBLR-PO's learning-rate hook sees one gradient share per micro-batch and scales the step."""
    r = load_recipe("recipes/oblr_po.yaml", "tiny", FAST + ["train.micro_batch_size=4", "eval.at_start=false",
                                                           "eval.at_end=false"])
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    rows = _metrics(tmp_path / "run")
    assert all(0 < row["oblr/lr_factor"] < 1 and row["oblr/snr"] > 0 for row in rows)


def test_scaled_step_restores_the_learning_rate():
    from rlrecipes.update import _step
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    w.grad = torch.tensor([1.0])
    _step(opt, 0.25)
    assert w.item() == 0.75 and opt.param_groups[0]["lr"] == 1.0
