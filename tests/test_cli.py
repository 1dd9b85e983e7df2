import json

import pytest
from typer.testing import CliRunner

from rlrecipes.cli import app

from .conftest import FAST

runner = CliRunner()


def test_list_json_has_the_fields_scripts_rely_on():
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    names = {r["name"] for r in rows}
    assert {"grpo", "dapo", "dr_grpo"} <= names
    for r in rows:
        assert {"name", "path", "paper", "arxiv", "status"} <= set(r)
        assert r["status"] != "invalid", r
    assert next(r for r in rows if r["name"] == "reg_grpo")["status"] == "partial"


def test_list_table():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0 and "grpo" in result.output and "2402.03300" in result.output


def test_show_prints_paper_and_difference_from_grpo():
    result = runner.invoke(app, ["show", "recipes/dapo.yaml"])
    assert result.exit_code == 0, result.output
    assert "2503.14476" in result.output
    assert "differences from recipes/grpo.yaml" in result.output
    assert "algorithm.loss.eps_high" in result.output and "0.28" in result.output


def test_validate_all_recipes_and_presets():
    result = runner.invoke(app, ["validate", "recipes/grpo.yaml", "recipes/dapo.yaml", "recipes/dr_grpo.yaml"])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") == 3 and "presets: tiny" in result.output


def test_validate_checks_overrides_with_preset():
    result = runner.invoke(app, ["validate", "recipes/grpo.yaml", "--preset", "tiny", "-o", "train.group_size=1"])
    assert result.exit_code == 2
    assert "train.group_size: group-relative advantages need group_size >= 2" in result.output


def test_help_everywhere_has_examples():
    for cmd in ("list", "show", "validate", "train"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0 and "Example" in result.output


def test_train_qlora_via_cli(tmp_path):
    args = ["train", "recipes/grpo.yaml", "--preset", "tiny", "--output-dir", str(tmp_path / "run"),
            "--seed", "3", "-o", "model.adapter=qlora"]
    for o in FAST:
        args += ["-o", o]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output
    recipe = (tmp_path / "run" / "recipe.yaml").read_text()
    assert "adapter: qlora" in recipe and "seed: 3" in recipe


def _train_tiny(tmp_path, *overrides, fast: bool = True):
    """`rlrecipes train recipes/grpo.yaml --preset tiny` into tmp_path/run with -o overrides."""
    args = ["train", "recipes/grpo.yaml", "--preset", "tiny", "--output-dir", str(tmp_path / "run")]
    for o in (FAST if fast else []) + list(overrides):
        args += ["-o", o]
    return runner.invoke(app, args)


def test_train_reward_that_raises_exits_2_naming_it(tmp_path):
    result = _train_tiny(tmp_path, "rewards=[{fn: accuracy}, {fn: 'tests.user_rewards:broken_reward'}]")
    assert result.exit_code == 2
    assert "rewards[1] (broken_reward): reward function raised KeyError" in result.output
    assert "Traceback" not in result.output


def test_train_missing_column_exits_2(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"{i}+1=", "final": str(i + 1)}) for i in range(20)))
    result = _train_tiny(tmp_path, f"data.source={{path: {data}}}", "data.fields={prompt: question}", "data.test_size=4")
    assert result.exit_code == 2, result.output
    assert "data.fields.answer: task 'arith' needs a 'answer' column" in result.output.replace("\n", "")


def test_failed_run_is_not_reported_as_finished(tmp_path):
    result = _train_tiny(tmp_path, "eval.at_start=false", "rewards=[{fn: 'tests.user_rewards:broken_reward'}]")
    assert result.exit_code == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_chat_template_without_one_is_a_one_line_error(tmp_path):
    result = _train_tiny(tmp_path, "model.chat_template=true", fast=False)
    assert result.exit_code == 2
    assert "model.chat_template: the tokenizer has no chat template" in result.output
    assert "Traceback" not in result.output


def test_error_messages_keep_square_brackets(capsys):
    # rich would read "[0.0, 1.1]" in a message as markup and drop it
    import typer

    from rlrecipes.cli import fail
    from rlrecipes.errors import UserError
    with pytest.raises(typer.Exit):
        fail(UserError("algorithm.advantage", "needs rewards in [min_value, max_value] = [0.0, 1.1]"))
    assert "needs rewards in [min_value, max_value] = [0.0, 1.1]" in capsys.readouterr().err
