"""`rlrecipes export`: the merged folder loads with plain transformers and computes the run's
policy's logits (LoRA and QLoRA merged, full fine-tune copied); bad targets are one-line errors."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from rlrecipes.cli import app
from rlrecipes.config import load_recipe
from rlrecipes.model import load_policy, load_weights
from rlrecipes.run import train

from .conftest import FAST

runner = CliRunner()


def _run(tmp_path, adapter):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["stages=[{kind: rl}]", "train.steps=1", "eval.at_start=false",
                                                          "eval.at_end=false", f"model.adapter={adapter}",
                                                          "train.lr=1.0e-2"])
    train(r, str(tmp_path / "run"), say=lambda *a: None)
    return r, tmp_path / "run"


@pytest.mark.parametrize("adapter", ["lora", "qlora", "none"])
def test_export_loads_with_transformers_and_matches_the_policy(tmp_path, adapter):
    r, run = _run(tmp_path, adapter)
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", str(run), "--merge", str(out)])
    assert result.exit_code == 0, result.output
    exported = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert not any("lora" in n for n, _ in exported.named_parameters())
    assert not any(type(m).__name__ == "Linear4bit" for m in exported.modules())
    from rlrecipes.model import resolve_path
    policy, _ = load_policy(r.model, torch.device("cpu"), resolve_path(r.model))
    load_weights(policy, run / "final")
    ids = tok(["12+34=", "What is 7+8?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        want = policy(**ids).logits
        got = exported(**ids).logits
    # merged W + s·BA against x·W + s·x·A·B: float rounding only
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    if adapter != "none":   # the adapter moved the model: an export of the bare base would differ
        base = AutoModelForCausalLM.from_pretrained(resolve_path(r.model))
        with torch.no_grad():
            assert (base(**ids).logits - want).abs().max() > 1e-3


def test_export_refuses_a_used_folder_and_a_non_run(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("keep me")
    result = runner.invoke(app, ["export", str(tmp_path), "--merge", str(used)])
    assert result.exit_code == 2 and "not an empty folder" in result.output and (used / "x").exists()
    result = runner.invoke(app, ["export", str(tmp_path / "nope"), "--merge", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a run directory" in result.output
    assert not (tmp_path / "out").exists()
