"""Experiment trackers (`logging.report_to: [tensorboard, mlflow, wandb]`), through their own
libraries, written under the run directory so that nothing needs a server or the network:

    RUN_DIR/tracking/tensorboard/   `tensorboard --logdir RUN_DIR/tracking/tensorboard`
    RUN_DIR/tracking/mlruns/        `mlflow ui --backend-store-uri RUN_DIR/tracking/mlruns`
                                    (mlflow's file store; metric names write `@` as `_at_`)
    RUN_DIR/tracking/wandb/         offline unless WANDB_API_KEY is set or WANDB_MODE=online;
                                    `wandb sync RUN_DIR/tracking/wandb/offline-run-*` uploads it

Each gets every line the loop writes to metrics.jsonl (numbers only, at its step), the resolved
recipe (tensorboard: a text entry; mlflow: parameters and a recipe.yaml artifact) and the final
eval summary. Only the main process logs. `close` runs on success, crash and Ctrl-C alike (the
run's `finally`). trackio is not offered: nothing here could test it offline.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from .errors import UserError

LIBRARY = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


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


class TensorBoard:
    def __init__(self, run_dir: Path, recipe_yaml: str):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_dir / "tracking" / "tensorboard"))
        self.writer.add_text("recipe", "```yaml\n" + recipe_yaml + "\n```")

    def log(self, row: dict) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, row["step"])

    def summary(self, summary: dict) -> None:
        lines = [f"| {when} | {k} | {v:.4f} |" for when, ev in summary.get("eval", {}).items() if ev
                 for k, v in _numbers(ev).items()]
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
        rows = [[when, k, v] for when, ev in summary.get("eval", {}).items() if ev for k, v in _numbers(ev).items()]
        self.run.log({"eval_table": wandb.Table(columns=["eval", "metric", "value"], data=rows)})
        self.run.summary["eval"] = summary.get("eval", {})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


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
                "mlflow": lambda: MLflow(run_dir, text, flatten(config))}
        self.items = [make[name]() for name in recipe.logging.report_to]

    def log(self, row: dict) -> None:
        for t in self.items:
            t.log(row)

    def finish(self, summary: dict) -> None:
        for t in self.items:
            if summary.get("eval"):
                t.summary(summary)
            t.close(summary.get("status", "failed"))
