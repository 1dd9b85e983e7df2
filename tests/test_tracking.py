"""`logging.report_to`: tensorboard and mlflow receive metrics.jsonl's values at their steps, the
resolved recipe and the run's status, read back with each library's own reader; a missing
library and an unknown tracker are one-line errors before any run directory exists."""
import json

import pytest
from typer.testing import CliRunner

from rlrecipes import tracking
from rlrecipes.cli import app
from rlrecipes.config import load_recipe
from rlrecipes.errors import UserError
from rlrecipes.run import train

from .conftest import FAST

runner = CliRunner()


def test_trackers_receive_the_metrics_lines(tmp_path):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["stages=[{kind: rl}]", "train.steps=2",
                                                          "logging.report_to=[tensorboard, mlflow]"])
    run = tmp_path / "run"
    train(r, str(run), say=lambda *a: None)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    loss = {m["step"]: m["loss"] for m in lines if "loss" in m}
    pass1 = {m["step"]: m["eval/pass@1"] for m in lines if "eval/pass@1" in m}
    assert sorted(loss) == [1, 2] and sorted(pass1) == [0, 2]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tracking" / "tensorboard"))
    acc.Reload()
    assert {e.step: e.value for e in acc.Scalars("loss")} == pytest.approx(loss, rel=1e-6)
    assert {e.step: e.value for e in acc.Scalars("eval/pass@1")} == pytest.approx(pass1, rel=1e-6)
    assert "recipe" in acc.Tags()["tensors"] or "recipe/text_summary" in acc.Tags()["tensors"]

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(run / "tracking" / "mlruns").resolve().as_uri())
    [found] = client.search_runs([client.get_experiment_by_name("rlrecipes").experiment_id])
    assert found.info.status == "FINISHED" and found.data.params["train.steps"] == "2"
    history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "loss")}
    assert history == pytest.approx(loss, rel=1e-6)
    assert {m.step: m.value for m in client.get_metric_history(found.info.run_id, "eval/pass_at_1")} == \
        pytest.approx(pass1, rel=1e-6)
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["recipe.yaml", "summary.json"]


def test_a_missing_library_is_refused_before_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setitem(tracking.LIBRARY, "mlflow", "no_such_module_for_rlrecipes")
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["logging.report_to=[tensorboard, mlflow]"])
    with pytest.raises(UserError, match=r"logging.report_to\[1\].*not installed.*rlrecipes\[tracking\]"):
        train(r, str(tmp_path / "run"), say=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_names_the_field():
    result = runner.invoke(app, ["validate", "recipes/grpo.yaml", "-o", "logging.report_to=[wandb]"])
    assert result.exit_code == 2 and "logging.report_to" in result.output
