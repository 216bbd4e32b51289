"""What a run's MLflow store did not take, kept in the run's output folder and uploaded later.

When an MLflow call of a run fails (the server died, the network went away), the plugin does
not fail the run: it prints one line, forgets the MLflow run in this process and, from then on,
writes what was meant for MLflow into ``<run>/mlflow_pending/``:

* ``pending.json``: the store, experiment, MLflow run id (``null`` if it was never created),
  run name, tags, params not yet logged, the error and when it happened, the final status;
* ``metrics.jsonl``: one line per epoch (``step``, ``timestamp``, ``metrics``);
* ``final_metrics.json``: the final metrics (test, validation, efficiency);
* ``model.keras``: the trained model, when ``tracking.log_model`` is on;
* ``datasets/<split>.csv``: the split tables, when the run went offline before logging them.

The rest of the output folder (reports, figures, recipe) is already there. ``facelab sync
RUN_OUTPUT_DIR`` (:func:`upload`) logs it all to the MLflow run (or to a new run if it was never
created), sets the run's final status and removes the folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from facelab.plugins.mlflow.tracking import PENDING_FOLDER

STATE = "pending.json"
METRICS = "metrics.jsonl"
FINAL = "final_metrics.json"
MODEL = "model.keras"
DATASETS = "datasets"


def folder(output_dir: Path) -> Path:
    return Path(output_dir) / PENDING_FOLDER


def offline(output_dir: Path) -> bool:
    """Whether this run's tracking went offline (its pending folder holds a state)."""
    return (folder(output_dir) / STATE).is_file()


def read(output_dir: Path) -> dict[str, Any]:
    return json.loads((folder(output_dir) / STATE).read_text())


def _write(output_dir: Path, state: dict[str, Any]) -> None:
    from facelab.files import write_json

    write_json(folder(output_dir) / STATE, state)


def short_error(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def go_offline(run, error: BaseException, where: str, *, uri: str, mlflow_run_id: str | None,
               tags: dict[str, str], params: dict[str, str] | None,
               datasets: dict[str, Any] | None = None) -> None:
    """Record that tracking failed ``where`` (e.g. ``epoch 2``), keep what is needed to upload
    later, and say so in one line on stderr."""
    target = folder(run.output_dir)
    target.mkdir(parents=True, exist_ok=True)
    settings = run.recipe.schema.tracking
    state = {"facelab_run_id": run.id, "uri": uri, "experiment": settings.experiment,
             "mlflow_run_id": mlflow_run_id, "run_name": run.name,
             "description": run.recipe.schema.description or None, "tags": tags,
             "params": params, "datasets_logged": datasets is None,
             "error": short_error(error), "offline_since": where,
             "offline_at": time.time(), "status": "RUNNING", "run_error": None}
    if datasets:
        (target / DATASETS).mkdir(exist_ok=True)
        for split, table in datasets.items():
            table.to_csv(target / DATASETS / f"{split}.csv", index=False)
    _write(run.output_dir, state)
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, soft_wrap=True).print(Text(
        f"warning: MLflow tracking offline since {where} ({state['error']}); training goes on "
        f"and what MLflow misses is kept in {target}; upload it later with "
        f"`facelab sync {run.output_dir}`", style="yellow"), highlight=False)


def add_metrics(output_dir: Path, step: int, metrics: dict[str, float]) -> None:
    line = {"step": step, "timestamp": int(time.time() * 1000),
            "metrics": {k: float(v) for k, v in metrics.items() if v is not None and v == v}}
    with open(folder(output_dir) / METRICS, "a") as handle:
        handle.write(json.dumps(line) + "\n")


def finish(run, result, outputs) -> None:
    """Keep the final metrics and (``tracking.log_model``) the trained model; status FINISHED."""
    from facelab.files import write_json

    target = folder(run.output_dir)
    write_json(target / FINAL, {k: float(v) for k, v in result.final_metrics().items()
                                if v is not None and v == v})
    if run.recipe.schema.tracking.log_model and outputs is not None:
        outputs.model.save(target / MODEL)
    set_status(run.output_dir, "FINISHED", None)


def set_status(output_dir: Path, status: str, error: str | None) -> None:
    state = read(output_dir)
    state["status"], state["run_error"] = status, error
    _write(output_dir, state)


# --------------------------------------------------------------------------------------------
# facelab sync
# --------------------------------------------------------------------------------------------

def upload(output_dir: Path, uri: str | None = None) -> tuple[str, str]:
    """Log what ``output_dir``'s run kept for MLflow (``uri``: default the store it was meant
    for), end the MLflow run with the run's final status and remove the pending folder; returns
    the MLflow run id and the status. A failure leaves the folder as it was, to try again."""
    from facelab.errors import FacelabError

    output_dir = Path(output_dir)
    if not offline(output_dir):
        raise FacelabError(f"{output_dir}: nothing to sync (no {PENDING_FOLDER}/{STATE}); "
                           "its tracking never went offline, or it was synced already")
    state = read(output_dir)
    if state["status"] == "RUNNING":
        raise FacelabError(f"{output_dir}: the run has not ended (still running, or killed); "
                           "let it end, or continue it with `facelab run --resume`")
    from facelab.plugins.mlflow import tracking

    tracking.quiet_mlflow()
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    resolved = tracking.tracking_uri(uri or state["uri"])
    tracking.check_store(resolved)
    with tracking.store_lock(resolved):
        mlflow.set_tracking_uri(resolved)
        experiment = tracking.get_or_create_experiment(state["experiment"])
    client = mlflow.MlflowClient()
    run_id = state.get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
        except MlflowException:
            run_id = None  # not in this store: a new run
    if not run_id:
        tags = {k: tracking.tag_text(v) for k, v in state["tags"].items()}
        if state.get("description"):
            tags["mlflow.note.content"] = state["description"]
        run_id = client.create_run(experiment.experiment_id, run_name=state["run_name"],
                                   tags=tags).info.run_id
        state["mlflow_run_id"] = run_id
        _write(output_dir, state)  # a second sync goes on with this run
    tracking.log_batches(client, run_id, params=state.get("params") or {})
    pending = folder(output_dir)
    if not state.get("datasets_logged") and (pending / DATASETS).is_dir():
        _log_datasets(run_id, pending / DATASETS)
    metrics = []
    if (pending / METRICS).is_file():
        for line in (pending / METRICS).read_text().splitlines():
            entry = json.loads(line)
            metrics += [Metric(tracking._metric_key(k), v, entry["timestamp"], entry["step"])
                        for k, v in entry["metrics"].items()]
    if (pending / FINAL).is_file():
        now = int(time.time() * 1000)
        metrics += [Metric(tracking._metric_key(k), v, now, 0)
                    for k, v in json.loads((pending / FINAL).read_text()).items()]
    tracking.log_batches(client, run_id, metrics=metrics)
    if (pending / MODEL).is_file():
        _log_model(run_id, output_dir, pending / MODEL)
    tracking.log_outputs(output_dir, run_id)
    if state.get("run_error"):
        client.set_tag(run_id, "facelab.error", tracking.tag_text(state["run_error"]))
    client.set_tag(run_id, "facelab.synced_after", tracking.tag_text(state["error"]))
    client.set_terminated(run_id, state["status"])
    shutil.rmtree(pending)
    return run_id, state["status"]


def _log_datasets(run_id: str, datasets: Path) -> None:
    import warnings

    import mlflow
    import mlflow.data
    import pandas as pd

    from facelab.plugins.mlflow import tracking
    from facelab.plugins.mlflow.tracking import SPLIT_CONTEXT

    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        for path in sorted(datasets.glob("*.csv")):
            table = pd.read_csv(path, keep_default_na=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(table, name=path.stem)
            mlflow.log_input(dataset, context=SPLIT_CONTEXT.get(path.stem, path.stem))
        # leave the run RUNNING: upload() ends it with the run's status
        tracking.detach_active_run(run_id)


def _log_model(run_id: str, output_dir: Path, model_file: Path) -> None:
    """The kept model as the run's LoggedModel (no signature: the data are not at hand)."""
    import keras
    import mlflow
    import mlflow.tensorflow

    from facelab.checkpoints import read_run
    from facelab.manager import import_keras_modules
    from facelab.modelspec import FILE
    from facelab.plugins.mlflow import tracking
    from facelab.plugins.mlflow.tracking import pip_requirements

    import_keras_modules()
    recipe = read_run(output_dir).recipe
    model = keras.models.load_model(model_file, compile=False)
    spec_file = output_dir / FILE
    spec = json.loads(spec_file.read_text()) if spec_file.is_file() else None
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        mlflow.tensorflow.log_model(model, name="model", pip_requirements=pip_requirements(recipe),
                                    metadata={"facelab": spec} if spec else None,
                                    extra_files=[str(spec_file)] if spec else None,
                                    tags={"facelab.recipe": recipe.name})
        tracking.detach_active_run(run_id)  # left RUNNING: upload() ends it
