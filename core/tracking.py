"""MLflow: run lifecycle, params, per-epoch and final metrics, artifacts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras

#: MLflow's embedded default store: a sqlite file in the working directory.
DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM_LENGTH = 6000


def tracking_uri(recipe_uri: str | None) -> str:
    """The recipe's ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the sqlite default."""
    return recipe_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def mlflow_run(recipe, run_name: str | None = None, tags: dict | None = None,
               nested: bool = False) -> Iterator[Any]:
    """Start an MLflow run; it ends FINISHED, FAILED (error as a tag) or KILLED, never RUNNING."""
    _quiet_mlflow()
    import mlflow

    tracking = recipe.schema.tracking
    mlflow.set_tracking_uri(tracking_uri(tracking.uri))
    mlflow.set_experiment(tracking.experiment)
    run = mlflow.start_run(run_name=run_name or tracking.run_name or recipe.name, nested=nested,
                           tags={**(tags or {}), **tracking.tags},
                           log_system_metrics=tracking.system_metrics or None)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.set_tag("facelab.error", "interrupted")
        mlflow.end_run("KILLED")
        raise
    except BaseException as exc:
        mlflow.set_tag("facelab.error", f"{type(exc).__name__}: {exc}"[:5000])
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def log_params(flat: dict[str, Any]) -> None:
    import mlflow

    params = {k: _param_text(v) for k, v in flat.items()}
    items = list(params.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start:start + 100]))


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    clean = {_metric_key(k): float(v) for k, v in metrics.items() if v is not None
             and v == v}  # drop NaN
    if clean:
        mlflow.log_metrics(clean, step=step)


def _metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_-./ `` only."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


class EpochMetrics(keras.callbacks.Callback):
    """Logs every epoch's metrics (train and validation) and the learning rate, with steps."""

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        lr = getattr(self.model.optimizer, "learning_rate", None)
        if lr is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        log_metrics(logs, step=epoch)


def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
