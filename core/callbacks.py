"""The Keras callbacks of a run: one forwards every epoch to the ``epoch_ended`` hook, one
writes the run's checkpoints, one draws a progress bar per epoch in the terminal."""

from __future__ import annotations

import time
from pathlib import Path

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from facelab import signals
from facelab.console import RichProgress, format_logs
from facelab.results import epoch_metrics


class HookCallback(keras.callbacks.Callback):
    """Tells the ``epoch_ended`` hook every epoch's metrics and the learning rate in effect."""

    def __init__(self, hooks, run, tasks: list[str]):
        super().__init__()
        self.hooks, self.run, self.tasks = hooks, run, tasks

    def on_train_batch_end(self, batch, logs=None):
        signals.raise_if_stopping()  # a stop whose exception Python swallowed

    def on_epoch_end(self, epoch, logs=None):
        signals.raise_if_stopping()
        logs = dict(logs or {})
        rate = current_learning_rate(self.model.optimizer)
        if rate is not None:
            logs["learning_rate"] = rate
        self.hooks.epoch_ended(run=self.run, epoch=epoch + 1,
                               metrics=epoch_metrics(logs, self.tasks))


class CheckpointCallback(keras.callbacks.Callback):
    """After every epoch, once the observers heard of it and early stopping decided, writes
    ``checkpoints/last.*`` and, on a new lowest validation loss, ``best.*``
    (:mod:`facelab.checkpoints`). ``self.model`` is the model ``fit`` trains (with
    ``train.augment_on: model``, the augmentation layers in front of the network); ``augment``
    are the augmentation layers, wherever they run, whose random state each checkpoint keeps.
    ``resumed`` is the checkpoint a resumed run started from."""

    def __init__(self, output_dir: Path, augment=(), resumed=None):
        super().__init__()
        self.output_dir, self.augment = Path(output_dir), list(augment)
        self.history = {k: list(v) for k, v in (resumed.history if resumed else {}).items()}
        self.best_epoch = resumed.best_epoch if resumed else None
        self.best_val_loss = resumed.best_val_loss if resumed else None
        self.seconds_before = resumed.train_seconds if resumed else 0.0

    def on_train_begin(self, logs=None):
        from facelab import checkpoints

        checkpoints.clean_partials(self.output_dir)
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        from facelab import checkpoints

        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        val_loss = (logs or {}).get("val_loss")
        best = val_loss is not None and (self.best_val_loss is None
                                         or float(val_loss) < self.best_val_loss)
        if best:
            self.best_epoch, self.best_val_loss = epoch + 1, float(val_loss)
        state = {"epoch": epoch + 1, "history": self.history,
                 "train_seconds": self.seconds_before + time.perf_counter() - self.started,
                 "best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss,
                 "stopped": bool(getattr(self.model, "stop_training", False)),
                 "random": checkpoints.random_state(self.model, self.augment)}
        checkpoints.save(self.output_dir, self.model, state, best)


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
        line = (f"epoch {epoch + 1}/{self.epochs} {time.perf_counter() - self.started:.1f} s  "
                f"{format_logs(logs)}" + (f" | lr {rate:.1e}" if rate is not None else ""))
        self.reporter.console.print(line, markup=False, highlight=False, no_wrap=True,
                                    overflow="ellipsis")

    def on_train_end(self, logs=None):
        if self.progress is not None:
            self.progress.stop()
