"""The Keras callbacks of a run: one forwards every epoch to the ``epoch_ended`` hook, the
other draws a progress bar per epoch in the terminal."""

from __future__ import annotations

import time

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from facelab.console import RichProgress, format_logs
from facelab.results import epoch_metrics


class HookCallback(keras.callbacks.Callback):
    """Tells the ``epoch_ended`` hook every epoch's metrics and the learning rate in effect."""

    def __init__(self, hooks, run, tasks: list[str]):
        super().__init__()
        self.hooks, self.run, self.tasks = hooks, run, tasks

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        rate = current_learning_rate(self.model.optimizer)
        if rate is not None:
            logs["learning_rate"] = rate
        self.hooks.epoch_ended(run=self.run, epoch=epoch + 1,
                               metrics=epoch_metrics(logs, self.tasks))


def current_learning_rate(optimizer) -> float | None:
    """The rate in effect now, schedules included."""
    rate = getattr(optimizer, "learning_rate", None)
    if rate is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer._get_current_learning_rate()))
    except Exception:  # an optimizer without Keras's private helper
        return float(keras.ops.convert_to_numpy(rate))


class EpochProgress(keras.callbacks.Callback):
    """A progress bar while an epoch runs, then one line per epoch: its time, loss and
    accuracies (training | validation) and the learning rate. Lines are cut with an ellipsis
    rather than wrapped, so each fits the terminal."""

    def __init__(self, reporter: RichProgress, epochs: int):
        super().__init__()
        self.reporter, self.epochs = reporter, epochs
        self.progress: Progress | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True,
                                                                  overflow="ellipsis")),
            console=self.reporter.console, transient=True)
        self.progress.start()
        self.started = time.perf_counter()
        self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}",
                                           total=self.params.get("steps"), info="")

    def on_train_batch_end(self, batch, logs=None):
        self.progress.update(self.task, advance=1, info=format_logs(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.progress.stop()
        rate = current_learning_rate(self.model.optimizer)
        line = (f"epoch {epoch + 1}/{self.epochs} {time.perf_counter() - self.started:5.1f} s  "
                f"{format_logs(logs)}" + (f" | lr {rate:.1e}" if rate is not None else ""))
        self.reporter.console.print(line, markup=False, highlight=False, no_wrap=True,
                                    overflow="ellipsis")

    def on_train_end(self, logs=None):
        if self.progress is not None:
            self.progress.stop()
