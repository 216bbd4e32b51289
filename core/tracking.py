"""MLflow: run lifecycle, tags, params, per-epoch and final metrics, datasets, model, artifacts.

Where things go (see docs/comparing-configurations.md):

* **tags** ``facelab.*``: recipe name, hash, path, paper and paper file, facelab version, the
  plugin packages and versions of every component used, git commit, the error of a failed run;
* **params**: the resolved recipe flattened to dot keys;
* **metrics**: per epoch (``train/loss``, ``train/<task>_accuracy``, ``val/...``,
  ``learning_rate``, steps = epochs) and final (``test_<task>_accuracy``,
  ``test_<task>_<class>_f1-score``, ``..._macro_avg_...``, efficiency);
* **datasets**: one input per split (contexts ``train``, ``validation``, ``test``);
* **artifacts**: ``recipe/`` (resolved, original, overrides, paper numbers), ``reports/``,
  ``figures/``;
* **model**: a LoggedModel (``mlflow.tensorflow``) with a signature and pinned requirements.
"""

from __future__ import annotations

import contextvars
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras

#: MLflow's embedded default store: a sqlite file in the working directory.
DEFAULT_URI = "sqlite:///mlflow.db"
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 5000
#: The file beside a paper recipe that holds the paper's reported numbers.
PAPER_FILE = "paper.yaml"
#: Experiment tag telling the MLflow UI these are training runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: MLflow dataset contexts for our split names.
SPLIT_CONTEXT = {"train": "train", "val": "validation", "test": "test"}
#: Output-folder files and the artifact folder each goes to; other top-level files go to
#: ``reports/``, folders keep their names.
ARTIFACT_FOLDERS = {"recipe.yaml": "recipe", "recipe.original.yaml": "recipe",
                    "overrides.txt": "recipe", "paper.yaml": "recipe"}


class RunTerminated(BaseException):
    """Raised in the main thread when the process gets SIGTERM during a run (like Ctrl-C)."""


# Defaults a caller (a sweep) sets for the runs started inside it.
_defaults: contextvars.ContextVar[dict] = contextvars.ContextVar("facelab_run_defaults",
                                                                 default={})
# The output folder of each active run (run id -> folder), logged when the run ends.
_outputs: dict[str, Path] = {}


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


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def run_defaults(run_name: str | None = None, tags: dict[str, str] | None = None) -> Iterator[None]:
    """Runs started inside get this name and these extra tags (used by sweeps for children)."""
    token = _defaults.set({"run_name": run_name, "tags": dict(tags or {})})
    try:
        yield
    finally:
        _defaults.reset(token)


@contextmanager
def mlflow_run(recipe, run_name: str | None = None, tags: dict | None = None,
               nested: bool = False) -> Iterator[Any]:
    """Start an MLflow run; it ends FINISHED, FAILED or KILLED (error as a tag), never RUNNING.

    Inside an active run (a sweep's parent) the new run is nested. SIGTERM raises
    :class:`RunTerminated` in the main thread, so ``kill PID`` ends the run KILLED like Ctrl-C.
    The output folder registered with :func:`set_output_dir` is logged whatever the outcome.
    """
    _quiet_mlflow()
    import mlflow

    _quiet_mlflow()  # mlflow sets its loggers to INFO when first imported
    tracking = recipe.schema.tracking
    if tracking.system_metrics:
        _check_psutil()
    defaults = _defaults.get()
    use_experiment(tracking.uri, tracking.experiment)
    all_tags = {**run_tags(recipe), **(tags or {}), **defaults.get("tags", {}), **tracking.tags}
    run = mlflow.start_run(
        run_name=run_name or defaults.get("run_name") or tracking.run_name or recipe.name,
        nested=nested or mlflow.active_run() is not None,
        tags={k: _tag_text(v) for k, v in all_tags.items()},
        description=recipe.schema.description or None,
        log_system_metrics=tracking.system_metrics or None)
    paper_file = all_tags.get("facelab.paper_file")
    with run_lifecycle(run.info.run_id):
        if paper_file:
            mlflow.log_artifact(paper_file, artifact_path="recipe")
        yield run


def use_experiment(uri: str | None, name: str):
    """Point MLflow at the store and experiment; mark the experiment as model training, so the
    MLflow UI opens it on its runs (not on the GenAI overview)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    experiment = mlflow.set_experiment(name)
    if EXPERIMENT_KIND[0] not in (experiment.tags or {}):
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return experiment


@contextmanager
def run_lifecycle(run_id: str) -> Iterator[None]:
    """End the active run ``run_id`` FINISHED, FAILED (error tag) or KILLED (Ctrl-C, SIGTERM);
    log its registered output folder first, whatever the outcome."""
    with _sigterm_raises():
        try:
            yield
        except KeyboardInterrupt:
            _finish(run_id, "KILLED", "interrupted (Ctrl-C)")
            raise
        except RunTerminated:
            _finish(run_id, "KILLED", "terminated (SIGTERM)")
            raise
        except BaseException as exc:
            _finish(run_id, "FAILED", f"{type(exc).__name__}: {exc}")
            raise
        else:
            _finish(run_id, "FINISHED", None)


def _finish(run_id: str, status: str, error: str | None) -> None:
    """Log the output folder (partial on failure), the error tag, and end the run."""
    import mlflow

    client = mlflow.MlflowClient()
    output = _outputs.pop(run_id, None)
    failure = None
    try:
        if output is not None and output.exists():
            log_outputs(output)
    except Exception as exc:  # never hide the run's own error behind a logging error
        if status == "FINISHED":
            failure, status, error = exc, "FAILED", f"logging artifacts failed: {exc}"
        else:
            client.set_tag(run_id, "facelab.artifact_error", _tag_text(exc))
    if error:
        client.set_tag(run_id, "facelab.error", _tag_text(error))
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:  # someone ended or replaced it; end ours by id
        client.set_terminated(run_id, status)
    if failure is not None:
        raise failure


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises RunTerminated (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunTerminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_psutil() -> None:
    try:
        import psutil  # noqa: F401
    except ImportError:
        from facelab.errors import FacelabError

        raise FacelabError("tracking.system_metrics: needs the psutil package "
                           "(pip install psutil), or set tracking.system_metrics=false") from None


def set_output_dir(folder: Path) -> None:
    """Register the active run's output folder; it is logged when the run ends, even failed."""
    import mlflow

    run = mlflow.active_run()
    if run is not None:
        _outputs[run.info.run_id] = Path(folder)


# --------------------------------------------------------------------------------------------
# Tags
# --------------------------------------------------------------------------------------------

def run_tags(recipe) -> dict[str, str]:
    """Tags every run carries: recipe, paper, versions of facelab and of the plugins, git."""
    from facelab import __version__
    from facelab.recipe import iter_component_specs

    tags = {"facelab.recipe": recipe.name, "facelab.recipe_hash": recipe.digest,
            "facelab.version": __version__}
    packages: dict[str, str] = {}
    for spec in iter_component_specs(recipe):
        origin = spec.component.origin
        packages[origin.package] = origin.version
        tags[f"facelab.component.{spec.where}"] = (
            f"{spec.name} ({origin.package} {origin.version}, {origin.plugin})")
    tags["facelab.plugins"] = ", ".join(f"{p}=={v}" for p, v in sorted(packages.items()))
    if recipe.path is not None:
        tags["facelab.recipe_path"] = str(Path(recipe.path).resolve())
    if recipe.overrides:
        tags["facelab.overrides"] = " ".join(recipe.overrides)
    if recipe.schema.paper:
        tags["facelab.paper"] = recipe.schema.paper
        paper = find_paper_file(recipe.path)
        if paper is not None:
            tags["facelab.paper_file"] = str(paper)
    tags.update(git_tags(recipe.path))
    return tags


def find_paper_file(recipe_path: str | Path | None) -> Path | None:
    """``paper.yaml`` in the recipe's folder (or its parent folder), if there is one."""
    if recipe_path is None:
        return None
    folder = Path(recipe_path).resolve().parent
    for candidate in (folder / PAPER_FILE, folder.parent / PAPER_FILE):
        if candidate.is_file():
            return candidate
    return None


def git_tags(recipe_path: str | Path | None) -> dict[str, str]:
    """The git commit (and whether the tree is dirty) of the recipe's repository, else of the
    facelab source tree; nothing when neither is in a git repository."""
    import facelab

    folders = [Path(recipe_path).resolve().parent] if recipe_path else []
    folders.append(Path(facelab.__file__).resolve().parent)
    for folder in folders:
        commit = _git(folder, "rev-parse", "HEAD")
        if commit:
            dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
            return {"facelab.git_commit": commit, "mlflow.source.git.commit": commit,
                    "facelab.git_dirty": "true" if dirty else "false"}
    return {}


def _git(folder: Path, *args: str) -> str:
    if not folder.is_dir():
        return ""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _tag_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_TAG_LENGTH else text[: MAX_TAG_LENGTH - 3] + "..."


# --------------------------------------------------------------------------------------------
# Params and metrics
# --------------------------------------------------------------------------------------------

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


def epoch_metric_names(logs: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """Keras's epoch logs under unambiguous names, grouped by split for MLflow's charts.

    ``loss`` -> ``train/loss``, ``val_race_loss`` -> ``val/race_loss``, and a single-task model's
    bare ``accuracy`` -> ``train/race_accuracy``. The ``/`` keeps them apart from the final
    evaluation metrics (``val_race_accuracy``), which would otherwise share a name.
    """
    out = {}
    for key, value in logs.items():
        if key == "learning_rate":
            out[key] = value
            continue
        split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
        if name != "loss" and len(tasks) == 1 and not name.startswith(f"{tasks[0]}_"):
            name = f"{tasks[0]}_{name}"
        out[f"{split}/{name}"] = value
    return out


class EpochMetrics(keras.callbacks.Callback):
    """Logs every epoch's metrics (train and validation) and the learning rate, with steps."""

    def __init__(self, tasks: list[str] | None = None):
        super().__init__()
        self.tasks = tasks

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        optimizer = self.model.optimizer
        lr = getattr(optimizer, "learning_rate", None)
        if lr is not None:
            try:  # the rate in effect at the end of the epoch, schedules included
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                    optimizer._get_current_learning_rate()))
            except Exception:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        tasks = self.tasks or list(getattr(self.model, "output_names", None) or [])
        log_metrics(epoch_metric_names(logs, tasks), step=epoch)


# --------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------

def log_artifacts(folder: Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


def artifact_layout(folder: Path) -> dict[Path, str]:
    """Output-folder file -> artifact path: ``recipe/``, ``figures/``, ``reports/`` ..."""
    layout = {}
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix == ".tmp":
            continue
        relative = path.relative_to(folder)
        if len(relative.parts) == 1:
            layout[path] = f"{ARTIFACT_FOLDERS.get(path.name, 'reports')}/{path.name}"
        else:
            layout[path] = relative.as_posix()
    return layout


def log_outputs(folder: Path) -> None:
    """Log a run's output folder in tidy artifact folders (one upload of a staged copy)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="facelab-artifacts-") as staging:
        for source, target in artifact_layout(folder).items():
            destination = Path(staging) / target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
        mlflow.log_artifacts(staging)


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


def log_datasets(recipe, data) -> None:
    """One MLflow dataset input per split, contexts train / validation / test."""
    import mlflow
    import mlflow.data

    sources = {name: spec for name, spec in recipe.datasets.items()}
    kinds = "+".join(dict.fromkeys(spec.name for spec in sources.values()))
    roots = [str(getattr(spec.params, "root", "") or "") for spec in sources.values()]
    source = ";".join(r for r in roots if r) or str(
        Path(recipe.schema.data.cache_dir).expanduser().absolute())
    for split, table in split_frames(recipe, data).items():
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(table, source=source, targets=recipe.stratify,
                                              name=f"{kinds}-{split}")
        mlflow.log_input(dataset, context=SPLIT_CONTEXT.get(split, split),
                         tags={"samples": str(len(table)),
                               "synthetic": str(int(table["synthetic"].sum()))})


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


def log_model(model: keras.Model, recipe, data) -> Any:
    """Log the trained model as an MLflow LoggedModel with a signature; returns its info."""
    import mlflow
    import mlflow.tensorflow
    import numpy as np
    from mlflow.models import infer_signature

    plan = data.example_plan()
    example = plan.materialize(data.images, np.arange(min(2, len(plan))))
    outputs = {k: np.asarray(v) for k, v in model.predict_on_batch(example).items()}
    signature = infer_signature(example, outputs)
    return mlflow.tensorflow.log_model(model, name="model", signature=signature,
                                       pip_requirements=pip_requirements(recipe),
                                       tags={"facelab.recipe": recipe.name})


def load_model(model_uri: str) -> keras.Model:
    """Load a logged model (``models:/<id>``, ``runs:/<run>/model``) with facelab's plugins
    registered first, so custom layers (CBAM, ...) deserialise."""
    _quiet_mlflow()
    import mlflow.tensorflow

    from facelab.manager import get_registry

    get_registry()
    return mlflow.tensorflow.load_model(model_uri)
