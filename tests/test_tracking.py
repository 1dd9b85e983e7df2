"""`logging.report_to`: tensorboard, mlflow, wandb (offline) and trackio receive metrics.jsonl's
values at their steps, the resolved recipe, the eval table and the run's end status, read back
with each library's own reader, after a finished run and after Ctrl-C; a missing library and an
unknown tracker are one-line errors before any run directory exists."""
import json
import os
import sys

import pytest
from typer.testing import CliRunner

from rlrecipes import loop, tracking
from rlrecipes.cli import app
from rlrecipes.config import load_recipe
from rlrecipes.errors import UserError
from rlrecipes.run import train

from .conftest import FAST

runner = CliRunner()
ALL = "logging.report_to=[tensorboard, mlflow, wandb, trackio]"


@pytest.fixture(scope="module")
def trackio_dir(tmp_path_factory):
    """trackio reads TRACKIO_DIR once, at import: set before the first run imports it, so that
    the tests never write into the user's HF_HOME."""
    path = tmp_path_factory.mktemp("trackio")
    if "trackio" in sys.modules:
        path = sys.modules["trackio"].utils.TRACKIO_DIR
    old, os.environ["TRACKIO_DIR"] = os.environ.get("TRACKIO_DIR"), str(path)
    yield path
    os.environ.pop("TRACKIO_DIR") if old is None else os.environ.__setitem__("TRACKIO_DIR", old)


@pytest.fixture
def offline_wandb(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)


def _metrics(run, key):
    """{step: value} of `key` in metrics.jsonl."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {m["step"]: m[key] for m in lines if key in m}


def _tracked(run, key):
    """{tracker: {step: value}} of `key` as each tracker's own reader gives it back."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from trackio.sqlite_storage import SQLiteStorage
    acc = EventAccumulator(str(run / "tracking" / "tensorboard"))
    acc.Reload()
    client = MlflowClient(tracking_uri=(run / "tracking" / "mlruns").resolve().as_uri())
    [ml] = client.search_runs([client.get_experiment_by_name("rlrecipes").experiment_id])
    [wb] = list((run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))   # offline by default
    tk = json.loads((run / "tracking" / "trackio.json").read_text())
    return {"tensorboard": {e.step: e.value for e in acc.Scalars(key)},
            "mlflow": {m.step: m.value for m in client.get_metric_history(ml.info.run_id, key.replace("@", "_at_"))},
            "wandb": {h["_step"]: h[key] for kind, h in _wandb_records(wb) if kind == "history" and key in h},
            "trackio": {r["step"]: r[key] for r in SQLiteStorage.get_logs(tk["project"], run_id=tk["run_id"])
                        if key in r}}


def _status(run):
    """The end status as each tracker recorded it (trackio keeps none)."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tracking" / "tensorboard"))
    acc.Reload()
    client = MlflowClient(tracking_uri=(run / "tracking" / "mlruns").resolve().as_uri())
    [ml] = client.search_runs([client.get_experiment_by_name("rlrecipes").experiment_id])
    [wb] = list((run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    return {"tensorboard": acc.Tensors("status/text_summary")[0].tensor_proto.string_val[0].decode(),
            "mlflow": ml.info.status, "wandb": [r for kind, r in _wandb_records(wb) if kind == "exit"]}


def test_trackers_receive_the_metrics_lines(tmp_path, trackio_dir, offline_wandb):
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["stages=[{kind: rl}]", "train.steps=2", ALL])
    run = tmp_path / "run"
    train(r, str(run), say=lambda *a: None)
    loss, pass1 = _metrics(run, "loss"), _metrics(run, "eval/pass@1")
    assert sorted(loss) == [1, 2] and sorted(pass1) == [0, 2]   # eval at start (step 0) and end
    assert any(_metrics(run, "reward_mean").values())   # the parity reward: not all zeros
    for key in ("loss", "reward_mean", "eval/pass@1"):
        want = _metrics(run, key)
        for name, got in _tracked(run, key).items():
            assert got == pytest.approx(want, rel=1e-6), (name, key)
    assert _status(run) == {"tensorboard": "finished", "mlflow": "FINISHED", "wandb": [0]}
    summary = json.loads((run / "summary.json").read_text())
    table = [[when, k, v] for when in ("start", "end") for k, v in summary["eval"][when].items()]
    assert ["end", "pass@1", pass1[2]] in table

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=(run / "tracking" / "mlruns").resolve().as_uri())
    [found] = client.search_runs([client.get_experiment_by_name("rlrecipes").experiment_id])
    assert found.data.params["train.steps"] == "2"
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["eval.json", "recipe.yaml", "summary.json"]
    ml_table = json.loads((run / "tracking" / "mlruns").joinpath(
        found.info.experiment_id, found.info.run_id, "artifacts", "eval.json").read_text())
    assert ml_table["columns"] == ["eval", "metric", "value"] and ["end", "pass@1", pass1[2]] in ml_table["data"]

    [wb] = list((run / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))
    [config] = [r for kind, r in _wandb_records(wb) if kind == "run"]
    assert config["train"]["steps"] == 2
    [wb_table] = list(wb.parent.glob("files/media/table/eval_table_*.table.json"))
    assert ["end", "pass@1", pass1[2]] in json.loads(wb_table.read_text())["data"]

    from trackio.sqlite_storage import SQLiteStorage
    tk = json.loads((run / "tracking" / "trackio.json").read_text())
    assert tk["dir"] == str(trackio_dir) and tk["run"] == "run"
    assert SQLiteStorage.get_run_config(tk["project"], run_id=tk["run_id"])["train"]["steps"] == 2
    [tk_table] = [row["eval_table"] for row in SQLiteStorage.get_logs(tk["project"], run_id=tk["run_id"])
                  if "eval_table" in row]
    assert {"eval": "end", "metric": "pass@1", "value": pass1[2]} in tk_table["_value"]


def test_ctrl_c_closes_every_tracker_with_what_was_logged(tmp_path, trackio_dir, offline_wandb, monkeypatch):
    """A second Ctrl-C (KeyboardInterrupt in the middle of step 2): step 1's line is in every
    tracker and each is closed as failed."""
    real = loop.rl_step

    def interrupted(ctx, step):
        if step == 2:
            raise KeyboardInterrupt
        return real(ctx, step)
    monkeypatch.setattr(loop, "rl_step", interrupted)
    r = load_recipe("recipes/grpo.yaml", "tiny", FAST + ["stages=[{kind: rl}]", "train.steps=2",
                                                          "eval.at_start=false", ALL])
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(r, str(run), say=lambda *a: None)
    loss = _metrics(run, "loss")
    assert sorted(loss) == [1]
    for name, got in _tracked(run, "loss").items():
        assert got == pytest.approx(loss, rel=1e-6), name
    assert _status(run) == {"tensorboard": "failed", "mlflow": "FAILED", "wandb": [1]}


def test_one_failing_tracker_does_not_leave_the_others_open():
    closed = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def summary(self, summary):
            pass

        def close(self, status):
            closed.append((self.name, status))
            if self.name == "a":
                raise OSError("a: disk full")

    trackers = tracking.Trackers(None, None, enabled=False)
    trackers.items = [Fake("a"), Fake("b")]
    with pytest.raises(OSError, match="a: disk full"):
        trackers.finish({"status": "finished", "eval": {}})
    assert closed == [("a", "finished"), ("b", "finished")]
    trackers.finish({"status": "finished"})   # closing twice closes nothing twice
    assert len(closed) == 2


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
    result = runner.invoke(app, ["validate", "recipes/grpo.yaml", "-o", "logging.report_to=[neptune]"])
    assert result.exit_code == 2 and "logging.report_to" in result.output
