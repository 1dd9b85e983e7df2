"""Experiment trackers (`logging.report_to: [tensorboard, mlflow, wandb, trackio]`), through their
own libraries, local so that nothing needs a server or the network:

    RUN_DIR/tracking/tensorboard/   `tensorboard --logdir RUN_DIR/tracking/tensorboard`
    RUN_DIR/tracking/mlruns/        `mlflow ui --backend-store-uri RUN_DIR/tracking/mlruns`
                                    (mlflow's file store; metric names write `@` as `_at_`)
    RUN_DIR/tracking/wandb/         offline unless WANDB_API_KEY is set or WANDB_MODE=online;
                                    `wandb sync RUN_DIR/tracking/wandb/offline-run-*` uploads it
    trackio's own local store       TRACKIO_DIR (default HF_HOME/trackio), project TRACKIO_PROJECT
                                    (default rlrecipes); RUN_DIR/tracking/trackio.json points to it

trackio is the one not under the run directory: it reads TRACKIO_DIR once, when it is imported,
so a second run in one process could not move it, and its dashboard (`trackio show --project
rlrecipes`) compares the runs of one store, as TRL's and transformers' trackio callbacks use it.

Each gets every line the loop writes to metrics.jsonl (numbers only, at its step), the resolved
recipe as the run's config, and the eval results as a table (eval, metric, value; tensorboard,
which has no tables, gets a markdown text table). Only the main process logs. `finish` runs on
success, crash and Ctrl-C alike (the run's `finally`) and closes every tracker even if one fails.
"""
from __future__ import annotations

import contextlib
import io
import math
import time
from pathlib import Path

from .errors import UserError

LIBRARY = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}
COLUMNS = ["eval", "metric", "value"]


def check(recipe) -> None:
    """Every named tracker's library imports; a one-line error before the run directory exists."""
    import importlib.util
    for i, name in enumerate(recipe.logging.report_to):
        if importlib.util.find_spec(LIBRARY[name]) is None:
            raise UserError(f"logging.report_to[{i}]", f"{name} is not installed",
                            "pip install 'rlrecipes[tracking]'")


def _numbers(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def eval_rows(summary: dict) -> list[list]:
    """The run's eval results as table rows [when, metric, value]: when is start / end."""
    return [[when, k, v] for when, ev in summary.get("eval", {}).items() if ev for k, v in _numbers(ev).items()]


class TensorBoard:
    def __init__(self, run_dir: Path, recipe_yaml: str):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_dir / "tracking" / "tensorboard"))
        self.writer.add_text("recipe", "```yaml\n" + recipe_yaml + "\n```")

    def log(self, row: dict) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, row["step"])

    def summary(self, summary: dict) -> None:
        lines = [f"| {when} | {k} | {v:.4f} |" for when, k, v in eval_rows(summary)]
        self.writer.add_text("eval", "| eval | metric | value |\n|---|---|---|\n" + "\n".join(lines))

    def close(self, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()


class MLflow:
    def __init__(self, run_dir: Path, recipe_yaml: str, params: dict):
        import os
        # the file store (no database libraries, nothing to run) is in maintenance mode in mlflow 3
        # and refused unless asked for; `mlflow migrate-filestore` converts it to a database later
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient
        self.client = MlflowClient(tracking_uri=(run_dir / "tracking" / "mlruns").resolve().as_uri())
        experiment = self.client.get_experiment_by_name("rlrecipes")
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment("rlrecipes")
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
        from mlflow.entities import Param
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        self.client.log_text(self.run_id, recipe_yaml, "recipe.yaml")

    def log(self, row: dict) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k.replace("@", "_at_"), v, now, row["step"]) for k, v in _numbers(row).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def summary(self, summary: dict) -> None:
        self.client.log_dict(self.run_id, summary, "summary.json")
        rows = eval_rows(summary)
        if rows:   # mlflow's table: a JSON artifact the UI's artifact view shows as a table
            self.client.log_table(self.run_id, {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}, "eval.json")

    def close(self, status: str) -> None:
        state = "FINISHED" if status == "finished" else "KILLED" if status.startswith("stopped") else "FAILED"
        self.client.set_terminated(self.run_id, state)


class WandB:
    def __init__(self, run_dir: Path, config: dict):
        import os

        import wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        (run_dir / "tracking").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(mode=mode, dir=str(run_dir / "tracking"), project=os.environ.get("WANDB_PROJECT", "rlrecipes"),
                              name=run_dir.name, config=config, settings=wandb.Settings(silent=True, console="off"))

    def log(self, row: dict) -> None:
        self.run.log(_numbers(row), step=row["step"])

    def summary(self, summary: dict) -> None:
        import wandb
        self.run.log({"eval_table": wandb.Table(columns=COLUMNS, data=eval_rows(summary))})
        self.run.summary["eval"] = summary.get("eval", {})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


class Trackio:
    """trackio (local-first: SQLite in TRACKIO_DIR, no server or network); its run is named
    after the run directory, and RUN_DIR/tracking/trackio.json records the store, project and id."""

    def __init__(self, run_dir: Path, config: dict):
        import json
        import os
        with contextlib.redirect_stdout(io.StringIO()):   # its banner would break the progress bar
            import trackio
            from trackio.utils import TRACKIO_DIR
            project = os.environ.get("TRACKIO_PROJECT", "rlrecipes")
            self.run = trackio.init(project=project, name=run_dir.name, config=config, embed=False,
                                    auto_log_cpu=False, auto_log_gpu=False)
        (run_dir / "tracking").mkdir(parents=True, exist_ok=True)
        (run_dir / "tracking" / "trackio.json").write_text(json.dumps(
            {"dir": str(TRACKIO_DIR), "project": project, "run": self.run.name, "run_id": self.run.id}))

    def log(self, row: dict) -> None:
        self.run.log(_numbers(row), step=row["step"])

    def summary(self, summary: dict) -> None:
        import trackio
        self.run.log({"eval_table": trackio.Table(columns=COLUMNS, data=eval_rows(summary))})

    def close(self, status: str) -> None:   # trackio keeps no run status
        import trackio
        with contextlib.redirect_stdout(io.StringIO()):
            trackio.finish()   # our run, also un-set as current: its atexit hook would finish it again


class Trackers:
    """The recipe's trackers, as one object the loop calls (a no-op when there are none)."""

    def __init__(self, recipe, run_dir: Path, enabled: bool):
        import yaml

        from .catalog import flatten
        from .config import to_dict
        self.items = []
        if not enabled:
            return
        resolved = to_dict(recipe)
        text = yaml.safe_dump(resolved, sort_keys=False)
        config = {k: v for k, v in resolved.items() if k != "presets"}
        make = {"tensorboard": lambda: TensorBoard(run_dir, text), "wandb": lambda: WandB(run_dir, config),
                "mlflow": lambda: MLflow(run_dir, text, flatten(config)), "trackio": lambda: Trackio(run_dir, config)}
        try:
            for name in recipe.logging.report_to:
                self.items.append(make[name]())
        except BaseException:   # the ones already open are closed, not left running
            self.finish({"status": "failed"})
            raise

    def log(self, row: dict) -> None:
        for t in self.items:
            t.log(row)

    def finish(self, summary: dict) -> None:
        """Write the eval table and close every tracker, even when one of them fails; then the
        first failure is raised (chained to the run's own error when there is one)."""
        items, self.items, failed = self.items, [], None
        for t in items:
            try:
                try:
                    if summary.get("eval"):
                        t.summary(summary)
                finally:
                    t.close(summary.get("status", "failed"))
            except Exception as err:
                failed = failed or err
        if failed:
            raise failed
