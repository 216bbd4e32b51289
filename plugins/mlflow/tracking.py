"""MLflow calls of the tracking plugin: store, run start and end, params, metrics, datasets,
artifacts and the model.

Where things go (see docs/comparing-configurations.md):

* **tags** ``facelab.*``: the run's tags (recipe name, hash, path, facelab version, the plugin
  packages and versions of every component used, git commit, paper), the error of a failed run;
* **params**: the resolved recipe flattened to dot keys;
* **metrics**: per epoch (``epoch/train/loss``, ``epoch/val/<task>/accuracy``,
  ``epoch/learning_rate``, steps = epochs from 1) and final (``test/<task>/accuracy``,
  ``test/<task>/f1/<class>``, ``test/<task>/f1_macro``, ``efficiency/fps``), named by
  :mod:`facelab.results`;
* **datasets**: one input per split (contexts ``train``, ``validation``, ``test``);
* **artifacts**: ``recipe/`` (resolved, original, overrides, paper numbers), ``reports/``,
  ``figures/``;
* **model**: a LoggedModel (``mlflow.tensorflow``) with a signature and pinned requirements.

Reliability (docs/reliability.md): MLflow's HTTP client is bounded (:data:`HTTP_LIMITS`), a
run checks that its store answers before any work (:func:`check_store`), a sqlite store's first
use is serialised by a file lock (:func:`store_lock`), and a store that fails mid-run sends
what is left to the run's ``mlflow_pending/`` folder (:mod:`facelab.plugins.mlflow.pending`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

#: MLflow's embedded default store: a sqlite file in the working directory.
DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
#: Experiment tag telling the MLflow UI these are training runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: MLflow dataset contexts for our split names.
SPLIT_CONTEXT = {"train": "train", "val": "validation", "test": "test"}
#: Output-folder files and the artifact folder each goes to ("": the top, where the model card
#: is the first thing seen); other top-level files go to ``reports/``, folders keep their names.
ARTIFACT_FOLDERS = {"recipe.yaml": "recipe", "recipe.original.yaml": "recipe",
                    "overrides.txt": "recipe", "paper.yaml": "recipe", "run.json": "recipe",
                    "model_spec.json": "model_spec", "model_card.md": "",
                    "sensitivity.json": "sensitivity", "sensitivity.png": "sensitivity"}
#: Where a run keeps what its store did not take (see pending.py).
PENDING_FOLDER = "mlflow_pending"
#: The tag linking an MLflow run to facelab's ``Run.id``.
RUN_ID_TAG = "facelab.run_id"
#: The tag holding the run's output folder (absolute), for ``facelab run --resume``.
OUTPUT_DIR_TAG = "facelab.output_dir"
#: Tags a resumed run drops: they described how it stopped.
STOP_TAGS = ("facelab.error", "facelab.artifact_error")
#: MLflow's HTTP client, bounded unless the user set these variables (MLflow's defaults: 7
#: retries with backoff factor 2 and 120 s per request, i.e. minutes of retrying). With these,
#: one call to a server that refuses connections gives up after about 3 s, one to a server that
#: hangs after at most 3 x 10 s + about 3 s of backoff.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
               "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
#: Seconds `facelab run` waits for a tracking server to answer before any work.
PREFLIGHT_TIMEOUT = 5.0


def tracking_uri(recipe_uri: str | None = None) -> str:
    """The recipe's ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the sqlite default.

    A relative sqlite path is made absolute against the working directory now: MLflow caches
    one store per URI, so a relative one would keep pointing at the first folder it was used in.
    """
    uri = recipe_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        path = Path(uri[len(prefix):]).expanduser()
        uri = prefix + str(path if path.is_absolute() else path.absolute())
    return uri


def quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # no "Downloading artifacts" bars in a run's terminal output (logging the model reads back)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # a failing store is reported once, in one line (pending.go_offline), not by every retry
    for name in ("urllib3", "mlflow.system_metrics", "mlflow.utils.async_logging"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_store(uri: str | None) -> None:
    """Raise a one-line :class:`FacelabError` naming the store unless it answers: a tracking
    server must answer HTTP within :data:`PREFLIGHT_TIMEOUT` seconds (any HTTP status counts);
    a sqlite store's folder must exist. Other stores are left to MLflow (bounded retries)."""
    import urllib.error
    import urllib.request

    from facelab.errors import FacelabError

    resolved = tracking_uri(uri)
    if resolved.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(f"{resolved.rstrip('/')}/health",
                                   timeout=PREFLIGHT_TIMEOUT).close()
        except urllib.error.HTTPError:
            return  # it answers, if not with 200 (a proxy, an auth wall): MLflow will say more
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FacelabError(f"tracking store {resolved} does not answer within "
                               f"{PREFLIGHT_TIMEOUT:.0f} s ({reason}); start it, fix "
                               "tracking.uri, or set tracking.enabled=false") from None
    elif resolved.startswith("sqlite:///"):
        folder = Path(resolved[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise FacelabError(f"tracking store {resolved}: folder {folder} does not exist; "
                               "create it, fix tracking.uri, or set tracking.enabled=false")


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a sqlite store across processes (``fcntl.flock`` on
    ``<store>.lock`` beside it): MLflow creates and migrates the schema on first use, and two
    processes doing that at once fail (``duplicate column name``). Other stores: no lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    path = Path(uri[len("sqlite:///"):] + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def get_or_create_experiment(name: str):
    """``mlflow.set_experiment``, safe when another process creates the same experiment."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.set_experiment(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" and "already exists" not in str(exc):
            raise
        return mlflow.set_experiment(name)  # created by someone else meanwhile: use it


def use_experiment(uri: str | None, name: str):
    """Point MLflow at the store and experiment; mark the experiment as model training, so the
    MLflow UI opens it on its runs (not on the GenAI overview)."""
    import mlflow

    resolved = tracking_uri(uri)
    with store_lock(resolved):
        mlflow.set_tracking_uri(resolved)
        experiment = get_or_create_experiment(name)
        if EXPERIMENT_KIND[0] not in (experiment.tags or {}):
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return experiment


def detach_active_run(run_id: str | None) -> None:
    """Forget the active MLflow run ``run_id`` in this process without calling the store (it
    failed, or is left RUNNING on purpose): pop it from MLflow's stack of active runs and stop
    its system-metrics thread."""
    if run_id is None:
        return
    try:
        from mlflow.environment_variables import MLFLOW_RUN_ID
        from mlflow.tracking import fluent

        stack = fluent._active_run_stack.get()
        if stack and stack[-1].info.run_id == run_id:
            stack.pop()
            MLFLOW_RUN_ID.unset()
        monitor = fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
        if monitor is not None:
            monitor._shutdown_event.set()  # its thread ends without flushing to the store
    except Exception:  # MLflow internals moved: at worst its atexit hook tries once more
        pass


def active_run_id() -> str | None:
    import mlflow

    active = mlflow.active_run()
    return active.info.run_id if active is not None else None


def start(run_name: str, tags: dict[str, Any], description: str | None, uri: str | None,
          experiment: str, system_metrics: bool) -> Any:
    """Start an MLflow run, nested under the active one (a sweep's parent) if there is one."""
    mlflow = _prepare(system_metrics)
    use_experiment(uri, experiment)
    return mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None,
                            tags={k: tag_text(v) for k, v in tags.items()},
                            description=description or None,
                            log_system_metrics=system_metrics or None)


def _prepare(system_metrics: bool):
    quiet_mlflow()
    import mlflow

    quiet_mlflow()  # mlflow sets its loggers to INFO when first imported
    if system_metrics:
        _check_psutil()
        # MLflow samples every 10 s by default, so a run of a few seconds logs none; sample
        # every 2 s and log each sample, unless the user set MLflow's own variables.
        if "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" not in os.environ:
            mlflow.set_system_metrics_sampling_interval(2)
        if "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING" not in os.environ:
            mlflow.set_system_metrics_samples_before_logging(1)
    return mlflow


def reopen(facelab_run_id: str, resumed_from_epoch: int, uri: str | None, experiment: str,
           system_metrics: bool) -> Any | None:
    """Reopen the MLflow run of facelab's run ``facelab_run_id``, whatever its status (RUNNING
    left by a SIGKILL, KILLED, FAILED): its status goes back to RUNNING and the tags of how it
    stopped are removed. ``None`` when the store has no run for it; a FINISHED one is refused."""
    mlflow = _prepare(system_metrics)
    use_experiment(uri, experiment)
    found = mlflow.search_runs(filter_string=f"tags.`{RUN_ID_TAG}` = '{facelab_run_id}'",
                               search_all_experiments=True, output_format="list",
                               order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    previous = found[0]
    if previous.info.status == "FINISHED":
        from facelab.errors import FacelabError

        raise FacelabError(f"--resume: MLflow run {previous.info.run_id} of run "
                           f"{facelab_run_id} already finished; nothing to resume")
    client = mlflow.MlflowClient()
    for tag in STOP_TAGS:
        if tag in previous.data.tags:
            client.delete_tag(previous.info.run_id, tag)
    active = mlflow.active_run()
    started = mlflow.start_run(run_id=previous.info.run_id,
                               nested=active is not None and active.info.run_id != previous.info.run_id,
                               log_system_metrics=system_metrics or None)
    mlflow.set_tag("facelab.resumed_from_epoch", str(resumed_from_epoch))
    return started


def find_output_dir(run_ref: str) -> Path | None:
    """The ``facelab.output_dir`` tag of the MLflow run ``run_ref`` (an MLflow run id, or
    facelab's run id), in ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``; ``None`` when there is no
    such store (none is created), run or tag."""
    quiet_mlflow()
    uri = tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # the store's first use, under the lock
    runs = []
    try:
        runs = [client.get_run(run_ref)]
    except MlflowException:
        pass
    if not runs:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.`{RUN_ID_TAG}` = '{run_ref}'",
                                  max_results=1) if experiments else []
    folder = runs[0].data.tags.get(OUTPUT_DIR_TAG) if runs else None
    return Path(folder) if folder else None


def finish(run_id: str, status: str, error: str | None, output_dir: Path | None) -> None:
    """Log the output folder (partial on failure), the error tag, and end the run with
    ``status``. A logging error turns FINISHED into FAILED and is raised after the run ended."""
    import mlflow

    client = mlflow.MlflowClient()
    failure = None
    try:
        if output_dir is not None and output_dir.exists():
            log_outputs(output_dir, run_id)
    except Exception as exc:  # never hide the run's own error behind a logging error
        if status == "FINISHED":
            failure, status, error = exc, "FAILED", f"logging artifacts failed: {exc}"
        else:
            client.set_tag(run_id, "facelab.artifact_error", tag_text(exc))
    if error:
        client.set_tag(run_id, "facelab.error", tag_text(error))
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:  # someone ended or replaced it; end ours by id
        client.set_terminated(run_id, status)
    if failure is not None:
        raise failure


def find_run(facelab_run_id: str) -> str | None:
    """The still-running MLflow run of facelab's run ``facelab_run_id`` (tag
    ``facelab.run_id``), or ``None`` when there is none."""
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        tags = mlflow.MlflowClient().get_run(active.info.run_id).data.tags
        if tags.get(RUN_ID_TAG) == facelab_run_id:
            return active.info.run_id
    found = mlflow.search_runs(filter_string=f"tags.`{RUN_ID_TAG}` = '{facelab_run_id}' and "
                                             "attributes.status = 'RUNNING'",
                               search_all_experiments=True, output_format="list", max_results=1)
    return found[0].info.run_id if found else None


def _check_psutil() -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        from facelab.errors import FacelabError

        raise FacelabError("tracking.system_metrics: needs the psutil package "
                           "(pip install psutil), or set tracking.system_metrics=false") from None


# --------------------------------------------------------------------------------------------
# Tags
# --------------------------------------------------------------------------------------------

def tag_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_TAG_LENGTH else text[: MAX_TAG_LENGTH - 3] + "..."


# --------------------------------------------------------------------------------------------
# Params and metrics
# --------------------------------------------------------------------------------------------

#: The most params and metrics MLflow takes in one ``log_batch`` call.
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000


def log_params(flat: dict[str, Any]) -> None:
    """The active run's params, as text MLflow accepts."""
    import mlflow

    log_batches(mlflow.MlflowClient(), mlflow.active_run().info.run_id,
                params={k: _param_text(v) for k, v in flat.items()})


def log_batches(client, run_id: str, *, params: dict[str, str] | None = None,
                metrics: list | None = None) -> None:
    """``params`` and ``metrics`` (``mlflow.entities.Metric``) in as few ``log_batch`` calls as
    MLflow's limits allow."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in (params or {}).items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + PARAMS_PER_BATCH])
    metrics = list(metrics or [])
    for start in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + METRICS_PER_BATCH])


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def log_metrics(metrics: dict[str, float], step: int | None = None,
                run_id: str | None = None) -> None:
    import mlflow

    clean = {_metric_key(k): float(v) for k, v in metrics.items() if v is not None
             and v == v}  # drop NaN
    if clean:
        mlflow.log_metrics(clean, step=step, run_id=run_id)


def _metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_-./ `` only."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------

def artifact_layout(folder: Path) -> dict[Path, str]:
    """Output-folder file -> artifact path: ``recipe/``, ``figures/``, ``reports/`` ..."""
    from facelab.checkpoints import FOLDER as CHECKPOINTS

    layout = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix == ".tmp":
            continue
        relative = path.relative_to(folder)
        if relative.parts[0] == CHECKPOINTS:  # the logged model is the trained one
            continue
        if relative.parts[0] == PENDING_FOLDER:  # facelab's own bookkeeping
            continue
        if len(relative.parts) == 1:
            layout[path] = (PurePosixPath(ARTIFACT_FOLDERS.get(path.name, "reports"))
                            / path.name).as_posix()
        else:
            layout[path] = relative.as_posix()
    return layout


def log_outputs(folder: Path, run_id: str | None = None) -> None:
    """Log a run's output folder in tidy artifact folders (one upload of a staged copy)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="facelab-artifacts-") as staging:
        for source, target in artifact_layout(folder).items():
            destination = Path(staging) / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
        mlflow.MlflowClient().log_artifacts(run_id or mlflow.active_run().info.run_id, staging)


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

def split_frames(recipe, data) -> dict[str, Any]:
    """Per split, one row per sample: path, source, class names per task, synthetic flag."""
    import numpy as np

    frame = data.table.frame
    out = {}
    for split, plan in data.splits.plans.items():
        if len(plan) == 0:
            continue
        rows = frame.iloc[plan.base].reset_index(drop=True)
        table = rows[["path", "source"]].copy()
        for task in recipe.tasks:
            classes = np.array(("", *data.tasks[task].classes), dtype=object)
            table[task] = classes[rows[task].to_numpy() + 1]  # -1 (no label) -> ""
        synthetic = plan.synthetic
        table["synthetic"] = synthetic
        if synthetic.any():
            neighbours = frame["path"].to_numpy()[plan.neighbour]
            table["neighbour_path"] = np.where(synthetic, neighbours, "")
            table["step"] = np.where(synthetic, plan.step, 0.0)
        out[split] = table
    return out


def split_datasets(recipe, data) -> dict[str, Any]:
    """One MLflow dataset per split (its table of samples, digest and source)."""
    import mlflow.data

    sources = {name: spec for name, spec in recipe.datasets.items()}
    kinds = "+".join(dict.fromkeys(spec.name for spec in sources.values()))
    roots = [str(getattr(spec.params, "root", "") or "") for spec in sources.values()]
    source = ";".join(r for r in roots if r) or str(
        Path(recipe.schema.data.cache_dir).expanduser().absolute())
    out = {}
    for split, table in split_frames(recipe, data).items():
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            out[split] = mlflow.data.from_pandas(table, source=source, targets=recipe.stratify,
                                                 name=f"{kinds}-{split}")
    return out


def log_datasets(datasets: dict[str, Any]) -> None:
    """One MLflow dataset input per split, contexts train / validation / test."""
    import mlflow

    for split, dataset in datasets.items():
        table = dataset.df
        mlflow.log_input(dataset, context=SPLIT_CONTEXT.get(split, split),
                         tags={"samples": str(len(table)),
                               "synthetic": str(int(table["synthetic"].sum()))})


def log_final_metrics(result, datasets: dict[str, Any], model_id: str | None) -> None:
    """The run's final metrics, each split's linked to its dataset and all to the logged model,
    so the model's page shows the final numbers and the data they were measured on."""
    from facelab.results import parse_metric_name

    by_split: dict[str | None, dict[str, float]] = {}
    for key, value in result.final_metrics().items():
        parsed = parse_metric_name(key)
        by_split.setdefault(parsed.split if parsed else None, {})[key] = value
    for split, metrics in by_split.items():
        import mlflow

        clean = {_metric_key(k): float(v) for k, v in metrics.items() if v == v}  # no NaN
        if clean:
            mlflow.log_metrics(clean, model_id=model_id, dataset=datasets.get(split))


def log_tables(result) -> None:
    """Per-class scores and per-group accuracies as MLflow tables (browsable in the UI)."""
    import mlflow

    for split, tasks in result.metrics.items():
        for task, m in tasks.items():
            rows = [{"class": cls, "precision": s.precision, "recall": s.recall, "f1": s.f1,
                     "support": s.support} for cls, s in m.per_class.items()]
            if rows:
                mlflow.log_table({k: [r[k] for r in rows] for k in rows[0]},
                                 f"tables/{split}_{task}_per_class.json")
            if m.groups is not None and m.groups.groups:
                columns = [*m.groups.columns, "n", "accuracy"]
                groups = [{**g.group, "n": g.n, "accuracy": g.accuracy} for g in m.groups.groups]
                mlflow.log_table({c: [g.get(c) for g in groups] for c in columns},
                                 f"tables/{split}_{task}_groups.json")
    fairness = [row for split, tasks in result.fairness.items() for f in tasks.values()
                for row in f.rows(split)]
    if fairness:  # per group and metric: value, interval, count, flag (facelab.fairness)
        mlflow.log_table({k: [r[k] for r in fairness] for k in fairness[0]},
                         "tables/fairness.json")


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

def pip_requirements(recipe) -> list[str]:
    """Pinned requirements to reload the model: TensorFlow, Keras, facelab and the plugins'
    packages (pinning skips MLflow's ~7 s requirement inference)."""
    from importlib.metadata import PackageNotFoundError, version

    from facelab import __version__
    from facelab.recipe import iter_component_specs

    pins = {"facelab": __version__}
    for name in ("tensorflow", "keras", "numpy"):
        try:
            pins[name] = version(name)
        except PackageNotFoundError:
            pass
    for spec in iter_component_specs(recipe):
        pins.setdefault(spec.component.origin.package, spec.component.origin.version)
    return [f"{name}=={v}" for name, v in pins.items()]


def log_model(model, recipe, data, spec_file: Path | None) -> Any:
    """Log the trained model as an MLflow LoggedModel with a signature, an input example and
    its model spec (tasks, class names, input, detector) as metadata and as a file; returns its
    info. Keras's progress bar is muted while MLflow checks the input example."""
    import json

    import keras
    import mlflow
    import mlflow.tensorflow
    import numpy as np
    from mlflow.models import infer_signature

    plan = data.example_plan()
    example = plan.materialize(data.images, np.arange(min(2, len(plan))))
    outputs = {k: np.asarray(v) for k, v in model.predict_on_batch(example).items()}
    signature = infer_signature(example, outputs)
    spec = json.loads(spec_file.read_text()) if spec_file and spec_file.is_file() else None
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        return mlflow.tensorflow.log_model(
            model, name="model", signature=signature, input_example=example,
            pip_requirements=pip_requirements(recipe), metadata={"facelab": spec} if spec else None,
            extra_files=[str(spec_file)] if spec else None,
            tags={"facelab.recipe": recipe.name})
    finally:
        if interactive:
            keras.config.enable_interactive_logging()


def load_model(model_uri: str):
    """Load a logged model (``models:/<id>``, ``runs:/<run>/model``) with the plugins' Keras
    classes imported first, so custom layers (CBAM, ...) deserialise."""
    quiet_mlflow()
    import mlflow.tensorflow

    from facelab.manager import import_keras_modules

    import_keras_modules()
    return mlflow.tensorflow.load_model(model_uri)


def references(run, uri: str | None) -> dict[str, str]:
    """What the terminal shows at the end: the MLflow run id and where to open it (the running
    `facelab ui` of this store, the tracking server itself, or how to start the UI)."""
    from facelab.plugins.mlflow import store

    resolved = tracking_uri(uri)
    page = f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    base = resolved if resolved.startswith(("http://", "https://")) else store.running_ui(resolved)
    link = f"{base.rstrip('/')}{page}" if base else f"`facelab ui`, then open {page}"
    return {"MLflow run": run.info.run_id, "MLflow UI": link}
