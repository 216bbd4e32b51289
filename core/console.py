"""Rich output: progress bars and phases for long steps, and result tables (no Keras here:
the epoch bars are a Keras callback, in :mod:`facelab.callbacks`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from facelab.results import Estimate, RunResult, TaskFairness, TaskMetrics, group_label
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

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        """A spinner while ``description`` runs, then one line with its duration."""
        start = time.perf_counter()
        with self.console.status(Text(f"{description}...")):
            yield
        self.log(f"{description}: {time.perf_counter() - start:.1f} s")


def format_logs(logs: dict | None) -> str:
    """``loss 0.812 acc 0.652 | val loss 1.023 acc 0.636``: the loss and accuracies, training
    then validation (a multi-task model shows each task's accuracy under the task's name)."""
    logs = logs or {}

    def pick(prefix: str) -> str:
        out = []
        for key, value in logs.items():
            if key.startswith("val_") != bool(prefix):
                continue
            name = key[len(prefix):]
            if name == "loss":
                out.append(f"loss {float(value):.3f}")
            elif name.endswith("accuracy"):
                label = "acc" if name == "accuracy" else name.removesuffix("_accuracy")
                out.append(f"{label} {float(value):.3f}")
        return " ".join(out)

    train, val = pick(""), pick("val_")
    return f"{train} | val {val}" if val else train


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
    split = "test" if result.fairness.get("test") else "val"
    for fairness in result.fairness.get(split, {}).values():
        for line in fairness_lines(split, fairness):
            console.print(line, markup=False, highlight=False)
    eff = result.efficiency
    console.print(f"params {eff.total_params:,} ({eff.trainable_params:,} trainable), "
                  f"RAM {eff.ram_mb:.2f} MB, {eff.ms_per_image:.2f} ms/image, "
                  f"{eff.fps:.0f} FPS at batch {eff.batch_size} on {eff.device}; "
                  f"training {eff.train_seconds:.1f} s", markup=False, highlight=False)
    console.print(f"outputs: {result.output_dir}", markup=False, highlight=False)
    for label, reference in result.references.items():
        console.print(f"{label}: {reference}", markup=False, highlight=False)


def _interval(estimate: Estimate) -> str:
    if estimate.low is None:
        return ""
    return f" [{estimate.low:.3f}, {estimate.high:.3f}]"


def fairness_lines(split: str, fairness: TaskFairness, shown: int = 3) -> list[str]:
    """The fairness summary of one task: the worst judged group, the largest gap, and the
    groups too small to judge (the full table is in ``fairness.json``)."""
    level = f"{fairness.confidence:.0%} bootstrap intervals, {fairness.resamples} resamples" \
        if fairness.resamples else "no intervals (evaluate.bootstrap: 0)"
    lines = [f"{fairness.task} fairness on {split} ({level}; groups over "
             f"{', '.join(fairness.columns)})"]
    worst = fairness.worst
    if worst is None:
        lines.append(f"  no group has {fairness.min_group_size} samples or more: none ranked")
    else:
        lines.append(f"  worst group: {worst.label}: accuracy {worst.accuracy.value:.3f}"
                     f"{_interval(worst.accuracy)} (n={worst.n}); overall "
                     f"{fairness.overall.accuracy.value:.3f}{_interval(fairness.overall.accuracy)}")
    gap = fairness.largest_gap
    if gap is not None:
        lines.append(f"  largest gap: {' x '.join(gap.columns)}: {gap.gap.value:.3f}"
                     f"{_interval(gap.gap)} ({group_label(gap.best)} vs "
                     f"{group_label(gap.worst)})")
    small = sorted(fairness.small_groups, key=lambda g: (len(g.columns), -g.n))
    if small:
        examples = ", ".join(f"{g.label} (n={g.n})" for g in small[:shown])
        more = f", {len(small) - shown} more" if len(small) > shown else ""
        lines.append(f"  too small to judge (n < {fairness.min_group_size}), not ranked: "
                     f"{len(small)} of {len(fairness.groups)} groups and intersections: "
                     f"{examples}{more}")
    for column, reason in fairness.left_out.items():
        lines.append(f"  column {column} left out: {reason}")
    return lines


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
