"""`rlrecipes compare`: the table holds each run's eval start -> end with intervals, the figure is
written, and a folder that is not a run is a one-line error."""
import json

from typer.testing import CliRunner

from rlrecipes.cli import app
from rlrecipes.compare import headline_metrics, load_run
from rlrecipes.config import load_recipe
from rlrecipes.run import train

from .conftest import FAST

runner = CliRunner()


def _fake_run(path, end_pass, steps=3):
    """A run directory as `train` leaves it, written by hand: recipe.yaml, metrics, summary."""
    path.mkdir()
    (path / "recipe.yaml").write_text("name: fake\n")
    lines = [{"step": s, "loss": 0.1, "reward_mean": 0.1 * s} for s in range(1, steps + 1)]
    lines.append({"step": steps, "eval/pass@1": end_pass, "eval/pass@1_ci": 0.05})
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ev = {"start": {"pass@1": 0.2, "pass@1_ci": 0.04}, "end": {"pass@1": end_pass, "pass@1_ci": 0.05}}
    (path / "summary.json").write_text(json.dumps({"eval": ev}))


def test_compare_table_and_figure(tmp_path):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["stages=[{kind: rl}]", "train.steps=2"])
    train(r, str(tmp_path / "real"), say=lambda *a: None)
    _fake_run(tmp_path / "fake", 0.625)
    out = tmp_path / "figs" / "cmp.png"
    result = runner.invoke(app, ["compare", str(tmp_path / "real"), str(tmp_path / "fake"), "--out", str(out)],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    real = json.loads((tmp_path / "real" / "summary.json").read_text())["eval"]
    assert f"{real['end']['pass@1']:.3f} ± {real['end']['pass@1_ci']:.3f}" in result.output
    assert "0.200 ± 0.040 -> 0.625 ± 0.050" in result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pass@1" in headline_metrics([load_run(tmp_path / "real"), load_run(tmp_path / "fake")])


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path):
    _fake_run(tmp_path / "fake", 0.5)
    result = runner.invoke(app, ["compare", str(tmp_path / "fake"), str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output
