"""A rich progress bar that shows the latest value of a few metrics."""
from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StepProgress:
    def __init__(self, label: str, total: int, shown: tuple[str, ...], enabled: bool = True):
        self.shown, self.enabled = shown, enabled
        self.progress = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 disable=not enabled)
        self.task = self.progress.add_task(label, total=total, info="")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, step: int, metrics: dict) -> None:
        info = "  ".join(f"{k}={metrics[k]:.3g}" for k in self.shown if k in metrics)
        self.progress.update(self.task, completed=step, info=info)

    def note(self, text: str) -> None:
        """Show `text` in place of the metrics while a long sub-task of a step runs."""
        self.progress.update(self.task, info=text)
