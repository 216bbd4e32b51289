"""Rich output: progress bars for long steps, one bar per epoch, and result tables."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import keras
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from facelab.results import RunResult, TaskMetrics
from facelab.tables import PlainTable

T = TypeVar("T")


class RichProgress:
    """A :class:`facelab.context.ProgressReporter` drawing rich progress bars."""

    def __init__(self, console: Console):
        self.console = console

    def _progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                        console=self.console, transient=False)

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        with self._progress() as progress:
            task = progress.add_task(description, total=total, info="")
            for item in items:
                yield item
                progress.advance(task)

    def log(self, message: str) -> None:
        self.console.print(Text(message, style="dim"))


class EpochProgress(keras.callbacks.Callback):
    """One rich bar per epoch, showing the running loss and metrics."""

    def __init__(self, reporter: RichProgress, epochs: int):
        super().__init__()
        self.reporter, self.epochs = reporter, epochs
        self.progress: Progress | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.progress = self.reporter._progress()
        self.progress.start()
        steps = self.params.get("steps")
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=steps, info="")

    def on_train_batch_end(self, batch, logs=None):
        self.progress.update(self.task, advance=1, info=format_logs(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.progress.update(self.task, info=format_logs(logs))
        self.progress.stop()

    def on_train_end(self, logs=None):
        if self.progress is not None:
            self.progress.stop()


def format_logs(logs: dict | None) -> str:
    return "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()
                     if k == "loss" or k.endswith("accuracy") or k.startswith("val_"))


def metrics_table(split: str, metrics: TaskMetrics) -> Table:
    """Table 4's layout: per-class precision, recall, F1, support; macro and weighted averages."""
    table = PlainTable(title=f"{metrics.task} on {split}: accuracy {metrics.accuracy:.4f} "
                             f"(n={metrics.n})")
    for column in ("class", "precision", "recall", "f1-score", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")

    def row(name, scores):
        table.add_row(name, *(f"{getattr(scores, k):.4f}" for k in ("precision", "recall", "f1")),
                      str(scores.support))

    for name, scores in metrics.per_class.items():
        row(name, scores)
    table.add_section()
    for average in ("macro", "weighted"):
        if getattr(metrics, average) is not None:
            row(f"{average} avg", getattr(metrics, average))
    return table


def confusion_table(split: str, metrics: TaskMetrics) -> Table:
    table = PlainTable(title=f"{metrics.task} confusion matrix on {split} "
                             "(rows: true, columns: predicted)")
    table.add_column("true \\ pred")
    for name in metrics.classes:
        table.add_column(name, justify="right")
    for name, row in zip(metrics.classes, metrics.confusion):
        table.add_row(name, *(str(v) for v in row))
    return table


def print_result(console: Console, result: RunResult) -> None:
    """The test tables, efficiency, the outputs folder and what observers reported."""
    for task, metrics in result.metrics.get("test", {}).items():
        console.print(metrics_table("test", metrics))
        console.print(confusion_table("test", metrics))
    eff = result.efficiency
    console.print(f"params {eff.total_params:,} ({eff.trainable_params:,} trainable), "
                  f"RAM {eff.ram_mb:.2f} MB, {eff.ms_per_image:.2f} ms/image, "
                  f"{eff.fps:.0f} FPS at batch {eff.batch_size} on {eff.device}; "
                  f"training {eff.train_seconds:.1f} s", markup=False, highlight=False)
    console.print(f"outputs: {result.output_dir}", markup=False, highlight=False)
    for label, reference in result.references.items():
        console.print(f"{label}: {reference}", markup=False, highlight=False)


def counts_table(counts: dict, tasks: dict) -> list[Table]:
    """Class counts at every stage (the race paper's Fig. 3), one table per task."""
    tables = []
    stages = [s for s, v in counts.items() if isinstance(v, dict) and "total" in v]
    for task, classes in tasks.items():
        table = PlainTable(title=f"{task}: samples per class at every stage")
        table.add_column("stage")
        for name in classes:
            table.add_column(name, justify="right")
        table.add_column("total", justify="right")
        table.add_column("synthetic", justify="right")
        for stage in stages:
            row = counts[stage][task]
            table.add_row(stage, *(str(row.get(c, 0)) for c in classes), str(sum(row.values())),
                          str(counts[stage].get("synthetic", "")))
        tables.append(table)
    sources = PlainTable(title="samples per source")
    names = sorted({s for stage in stages for s in counts[stage]["sources"]})
    sources.add_column("stage")
    for name in names:
        sources.add_column(name, justify="right")
    for stage in stages:
        sources.add_row(stage, *(str(counts[stage]["sources"].get(n, 0)) for n in names))
    tables.append(sources)
    left_out = {**{f"loading: {k}": v for k, v in counts.get("skipped", {}).items()},
                **{f"detector: {k}": v for k, v in counts.get("detector", {}).items()}}
    if left_out:
        table = PlainTable(title="loading and detection outcomes")
        table.add_column("what")
        table.add_column("images", justify="right")
        for what, n in left_out.items():
            table.add_row(what, str(n))
        tables.append(table)
    return tables
