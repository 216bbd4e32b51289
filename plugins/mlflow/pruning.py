"""The Keras callback that reports a trial's per-epoch validation metric to Optuna and stops a
trial its pruner gives up on. Imported only when a sweep's trial trains (it imports Keras)."""

from __future__ import annotations

import keras
import optuna

from facelab.errors import FacelabError, RunStopped
from facelab.results import epoch_metrics


class TrialPruned(RunStopped, optuna.TrialPruned):
    """Optuna's signal that a trial was pruned, which the runner ends as a stopped run (KILLED
    in run.json and MLflow), not a failed one."""


class ReportToOptuna(keras.callbacks.Callback):
    """After every epoch: ``trial.report(value, epoch)`` with ``metric``
    (``epoch/val/<task>/accuracy``); when ``trial.should_prune()``, training stops after this
    epoch (so the run's observers still hear of it) and :class:`TrialPruned` is raised when
    training ends: the run ends KILLED, and the sweep marks it pruned."""

    def __init__(self, trial: optuna.Trial, metric: str, tasks: list[str]):
        super().__init__()
        self.trial, self.metric, self.tasks = trial, metric, list(tasks)
        self.pruned: str | None = None

    def on_epoch_end(self, epoch, logs=None):
        metrics = epoch_metrics(dict(logs or {}), self.tasks)
        if self.metric not in metrics:
            known = ", ".join(sorted(k for k in metrics if k.startswith("epoch/val/")))
            raise FacelabError(f"pruner.metric: {self.metric} is not among the epoch's metrics "
                               f"({known or 'none: the recipe has no validation split'})")
        value = metrics[self.metric]
        self.trial.report(value, epoch + 1)  # epochs count from 1, as MLflow's steps do
        if self.trial.should_prune():
            self.pruned = f"pruned after epoch {epoch + 1} ({self.metric} = {value:.4g})"
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.pruned:
            raise TrialPruned(self.pruned)
