"""`rlrecipes export`: the merged folder loads with plain transformers and computes the run's
policy's logits (LoRA, LoRA after SFT and QLoRA merged, full fine-tune copied; a bfloat16 base
exported as bfloat16); bad targets are one-line errors and a failed write leaves nothing."""
import json

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from rlrecipes.cli import app
from rlrecipes.config import load_recipe, to_dict
from rlrecipes.evalrun import checkpoint_dir, resolve_target
from rlrecipes.export import write_atomically
from rlrecipes.model import load_policy, load_weights, resolve_path
from rlrecipes.run import train

from .conftest import FAST

runner = CliRunner()
ONE_STEP = FAST + ["stages=[{kind: rl}]", "train.steps=1", "eval.at_start=false", "eval.at_end=false",
                   "train.lr=1.0e-2"]   # a large step, so the trained policy is far from its base
SFT = "stages=[{kind: sft, steps: 2, batch_size: 4}, {kind: rl}]"


def _run(tmp_path, *overrides):
    # float32 unless an override says otherwise: the logit comparisons below are float32 claims
    # (dtype auto is bf16 on a GPU, where they failed on an H200)
    train(load_recipe("recipes/grpo.yaml", "tiny", ONE_STEP + ["model.dtype=float32", *overrides]),
          str(tmp_path / "run"), say=lambda *a: None)
    return tmp_path / "run"


def _eval_policy(run):
    """The run's final policy loaded as evalrun.run_eval_command loads it (written out here, not
    taken from export.py, so a wrong base or adapter there cannot hide on both sides)."""
    recipe, _ = resolve_target(run, None, [])
    weights = checkpoint_dir(run, "final")
    base_path = str(run / "sft-model") if (run / "sft-model").is_dir() else resolve_path(recipe.model)
    cfg = recipe.model if (weights / "adapter_config.json").exists() else recipe.model.model_copy(update={"adapter": "none"})
    policy, _ = load_policy(cfg, torch.device("cpu"), base_path)
    load_weights(policy, weights)
    return policy, base_path


def _logits(model, tok):
    ids = tok(["12+34=", "What is 7+8?", "3*3"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**ids).logits.float()


@pytest.mark.parametrize("overrides", [["model.adapter=lora"], ["model.adapter=qlora"], ["model.adapter=none"],
                                       ["model.adapter=lora", SFT]], ids=["lora", "qlora", "full", "sft+lora"])
def test_export_loads_with_transformers_and_matches_the_policy(tmp_path, overrides):
    run = _run(tmp_path, *overrides)
    out = tmp_path / "export"
    out.mkdir()   # an existing empty folder is fine
    result = runner.invoke(app, ["export", str(run), "--merge", str(out)])
    assert result.exit_code == 0, result.output
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".tmp-export-*"))
    exported = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert not any("lora" in n for n, _ in exported.named_parameters())
    assert not any(type(m).__name__ == "Linear4bit" for m in exported.modules())
    policy, base_path = _eval_policy(run)
    want, got = _logits(policy, tok), _logits(exported, tok)
    # float32 both sides; merging only reorders sums (x(W+sBA) against xW + s(xA)B): measured
    # max 5.3e-7 on logits of size <= 1.4, i.e. a few float32 ulps; 1e-5 leaves 20x margin
    assert (got - want).abs().max() < 1e-5
    # the step moved the policy (measured >= 0.47 from its base: the bare base, or the run's
    # SFT model after an SFT stage), so exporting the base unchanged would fail above
    base = AutoModelForCausalLM.from_pretrained(base_path)
    assert (_logits(base, tok) - want).abs().max() > 0.1
    assert base_path.endswith("sft-model") == (SFT in overrides)


def test_qlora_on_a_bfloat16_base_exports_bfloat16(tmp_path):
    tiny = resolve_path(load_recipe("recipes/grpo.yaml", "tiny", []).model)
    AutoModelForCausalLM.from_pretrained(tiny).to(torch.bfloat16).save_pretrained(tmp_path / "base")
    AutoTokenizer.from_pretrained(tiny).save_pretrained(tmp_path / "base")
    run = _run(tmp_path, "model.adapter=qlora", f"model.name_or_path={tmp_path / 'base'}")
    result = runner.invoke(app, ["export", str(run), "--merge", str(tmp_path / "export")])
    assert result.exit_code == 0 and "bfloat16" in result.output, result.output
    with safe_open(str(tmp_path / "export" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}   # the run computed in float32
    assert json.loads((tmp_path / "export" / "config.json").read_text())["dtype"] == "bfloat16"
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tmp_path / "export")
    policy, _ = _eval_policy(run)
    # bfloat16 keeps 8 significant bits: each merged weight moves by <= 2^-9 of itself; measured
    # 1.4e-3 on the logits (the adapter moved them by 0.47), so 1e-2 tells rounding from a bug
    assert (_logits(exported, tok) - _logits(policy, tok)).abs().max() < 1e-2


def _bare_run(path, checkpoint: bool):
    """A run directory as `train` leaves it before its first checkpoint (recipe.yaml only),
    or after one that never finished (a complete checkpoints/step-000001, no final/)."""
    path.mkdir()
    recipe = load_recipe("recipes/grpo.yaml", "tiny", [])
    (path / "recipe.yaml").write_text(yaml.safe_dump(to_dict(recipe), sort_keys=False))
    if checkpoint:
        (path / "checkpoints" / "step-000001" / "model").mkdir(parents=True)
        (path / "checkpoints" / "step-000001" / "trainer_state.json").write_text('{"step": 1}')
    return path


@pytest.mark.parametrize("case,message", [
    ("used", "not an empty folder"), ("missing", "not a run directory"), ("no-recipe", "not a run directory"),
    ("no-checkpoint", "no checkpoint to export"), ("unfinished", "no final/ (the run did not finish)")])
def test_export_refuses_in_one_line(tmp_path, case, message):
    out = tmp_path / "out"
    run = {"missing": tmp_path / "nope", "no-recipe": tmp_path}.get(case)
    if case == "used":
        run = tmp_path
        out.mkdir()
        (out / "x").write_text("keep me")
    elif run is None:
        run = _bare_run(tmp_path / "run", checkpoint=case == "unfinished")
    result = runner.invoke(app, ["export", str(run), "--merge", str(out)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1   # one line, no traceback
    assert (out / "x").exists() if case == "used" else not out.exists()


def test_a_failed_write_leaves_no_folder(tmp_path):
    class HalfWritten:
        def save_pretrained(self, path):
            path.mkdir()
            (path / "config.json").write_text("{}")
            raise OSError("No space left on device")

    with pytest.raises(OSError):
        write_atomically(HalfWritten(), None, tmp_path / "out", {})
    assert list(tmp_path.iterdir()) == []
