"""`rlrecipes compare`: the table holds each run's training eval start -> end and its `rlrecipes
eval` results with intervals, the figure draws each run's reward and eval curves, and a path
that is not a run is a one-line error."""
import io
import json

import pytest
from typer.testing import CliRunner

from rlrecipes.cli import app
from rlrecipes.compare import figure, load_runs, table
from rlrecipes.config import load_recipe
from rlrecipes.run import train

from .conftest import FAST

runner = CliRunner()


def _text(runs) -> str:
    """The compare table as the terminal shows it, wide enough that no cell wraps."""
    from rich.console import Console
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(table(runs))
    return console.export_text()


def _fake_run(path, end_pass, steps=3):
    """A run directory written by hand in the formats compare.py's docstring lists: recipe.yaml
    (only its presence is read), metrics.jsonl training and eval lines, summary.json, and one
    `rlrecipes eval` result."""
    path.mkdir(parents=True)
    (path / "recipe.yaml").write_text("name: fake\n")
    lines = [{"step": 0, "eval/pass@1": 0.2, "eval/pass@1_ci": 0.04}]
    lines += [{"step": s, "loss": 0.1, "reward_mean": 0.1 * s} for s in range(1, steps + 1)]
    lines.append({"step": steps, "eval/pass@1": end_pass, "eval/pass@1_ci": 0.05})
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    ev = {"start": {"pass@1": 0.2, "pass@1_ci": 0.04}, "end": {"pass@1": end_pass, "pass@1_ci": 0.05}}
    (path / "summary.json").write_text(json.dumps({"eval": ev}))
    (path / "eval").mkdir()
    (path / "eval" / "best.json").write_text(json.dumps({"checkpoint": "best", "split": "test", "problems": 200,
                                                         "pass@4": 0.9, "pass@4_ci": 0.03, "samples": 4}))
    return path


def test_compare_table_and_figure_of_a_real_run_and_a_written_one(tmp_path):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["stages=[{kind: rl}]", "train.steps=2", "eval.limit=4",
                                                          "generation.max_new_tokens=16"])
    train(r, str(tmp_path / "real"), say=lambda *a: None)
    result = runner.invoke(app, ["eval", str(tmp_path / "real"), "--checkpoint", "final", "--limit", "4",
                                 "--samples", "2"])
    assert result.exit_code == 0, result.output
    _fake_run(tmp_path / "fake", 0.625)
    out = tmp_path / "figs" / "cmp.png"
    result = runner.invoke(app, ["compare", str(tmp_path / "real"), str(tmp_path / "fake"), "--out", str(out)])
    assert result.exit_code == 0 and "eval results" in result.output, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out}" in result.output.replace("\n", "")
    text = _text(load_runs([tmp_path / "real", tmp_path / "fake"]))
    real = json.loads((tmp_path / "real" / "summary.json").read_text())["eval"]
    evaluated = json.loads((tmp_path / "real" / "eval" / "final.json").read_text())
    header = next(line for line in text.splitlines() if "pass@1" in line and "run" in line)
    assert header.index("pass@1") < header.index("pass@4") < header.index("mean@n") < header.index("maj@1")
    for run, source, ev in [("real", " start ", real["start"]), ("real", " end ", real["end"]),
                            ("real", " eval final: test, 4×2 ", evaluated)]:
        cells = _cells(text, run, source)
        want = [f"{ev[m]:.3f} ± {ev[m + '_ci']:.3f}" for m in ("pass@1", "mean@n", "maj@1")]
        assert cells[0] == "2" and [cells[1], *cells[3:]] == want
        assert cells[2] == "—"   # the real run's evals have no pass@4 (eval.k [1], --samples 2)
    assert _cells(text, "fake", " start ") == ["3", "0.200 ± 0.040", "—", "—", "—"]
    assert _cells(text, "fake", " end ") == ["3", "0.625 ± 0.050", "—", "—", "—"]   # columns kept, shown missing
    assert _cells(text, "fake", " eval best: test, 200×4 ") == ["3", "—", "0.900 ± 0.030", "—", "—"]


def _cells(text, run, source):
    """The cells after the eval column of the row of `run` whose eval column is `source`."""
    line = next(line for line in text.splitlines() if line.startswith(f"│ {run} ") and source in line)
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    return [cells[1], *cells[3:]]


def test_figure_has_each_runs_reward_and_eval_curve(tmp_path):
    runs = load_runs([_fake_run(tmp_path / "a" / "run", 0.5), _fake_run(tmp_path / "b" / "run", 0.75, steps=4)])
    assert [r["name"] for r in runs] == [str(tmp_path / "a" / "run"), str(tmp_path / "b" / "run")]  # same name
    left, right = figure(runs, "pass@1").axes
    assert [list(line.get_ydata()) for line in left.lines] == [[0.1, 0.2, 0.1 * 3], [0.1, 0.2, 0.1 * 3, 0.1 * 4]]
    evals = [c.lines[0] for c in right.containers]   # errorbar: (data line, caps, bars)
    assert [list(line.get_xdata()) for line in evals] == [[0, 3], [0, 4]]
    assert [list(line.get_ydata()) for line in evals] == [[0.2, 0.5], [0.2, 0.75]]
    bars = right.containers[0].lines[2][0].get_segments()   # vertical bars: value ± 95% half-width
    assert [y for seg in bars for y in seg[:, 1]] == pytest.approx([0.2 - 0.04, 0.2 + 0.04, 0.5 - 0.05, 0.5 + 0.05])
    assert [t.get_text() for t in right.get_legend().get_texts()] == [r["name"] for r in runs]


def test_figure_goes_to_compare_png_in_the_working_directory(tmp_path, monkeypatch):
    _fake_run(tmp_path / "a", 0.5)
    _fake_run(tmp_path / "b", 0.75)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compare", "a", "b"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "compare.png").is_file() and f"wrote {tmp_path / 'compare.png'}" in result.output


@pytest.mark.parametrize("case,message", [
    ("missing", "nope: no such folder"), ("no-recipe", "not a run directory (no recipe.yaml)"),
    ("file", "not a run directory"), ("no-metrics", "no metrics.jsonl lines yet"),
    ("out-folder", "--out: "), ("out-type", "cmp.txt: unknown figure type")])
def test_compare_refuses_in_one_line(tmp_path, case, message):
    good = _fake_run(tmp_path / "good", 0.5)
    other = {"missing": tmp_path / "nope", "no-recipe": tmp_path, "file": good / "summary.json"}.get(case, good)
    if case == "no-metrics":
        other = tmp_path / "started"
        other.mkdir()
        (other / "recipe.yaml").write_text("name: started\n")
    out = {"out-folder": tmp_path, "out-type": tmp_path / "cmp.txt"}.get(case, tmp_path / "cmp.png")
    result = runner.invoke(app, ["compare", str(good), str(other), "--out", str(out)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "cmp.png").exists()
