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


def test_trackers_receive_the_metrics_lines(tmp_path, monkeypatch):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["stages=[{kind: rl}]", "train.steps=2",
                                                          "logging.report_to=[tensorboard, mlflow, wandb]"])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
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

    [offline] = list((run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))   # offline by default
    records = list(_wandb_records(offline))
    history = [r for kind, r in records if kind == "history"]
    assert {h["_step"]: h["loss"] for h in history if "loss" in h} == pytest.approx(loss, rel=1e-6)
    assert {h["_step"]: h["eval/pass@1"] for h in history if "eval/pass@1" in h} == pytest.approx(pass1, rel=1e-6)
    [config] = [r for kind, r in records if kind == "run"]
    assert config["train"]["steps"] == 2 and [r for kind, r in records if kind == "exit"] == [0]


def _wandb_records(path):
    """(kind, content) of an offline .wandb file: wandb's LevelDB-style log (a 7-byte ':W&B'
    header, 32 KiB blocks, records split FULL/FIRST/MIDDLE/LAST) of protobuf Records."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, parts = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):   # block trailer / padding
            pos += left
            continue
        parts, pos = parts + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (2, 3):   # FIRST / MIDDLE: more to come
            continue
        record = pb.Record()
        record.ParseFromString(parts)
        parts = b""
        which = record.WhichOneof("record_type")
        if which == "history":
            yield which, {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
        elif which == "run":
            yield which, {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif which == "exit":
            yield which, record.exit.exit_code


def test_a_missing_library_is_refused_before_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setitem(tracking.LIBRARY, "mlflow", "no_such_module_for_rlrecipes")
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["logging.report_to=[tensorboard, mlflow]"])
    with pytest.raises(UserError, match=r"logging.report_to\[1\].*not installed.*rlrecipes\[tracking\]"):
        train(r, str(tmp_path / "run"), say=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_names_the_field():
    result = runner.invoke(app, ["validate", "recipes/grpo.yaml", "-o", "logging.report_to=[trackio]"])
    assert result.exit_code == 2 and "logging.report_to" in result.output
