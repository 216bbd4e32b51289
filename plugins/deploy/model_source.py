"""What MODEL names: an MLflow run id, a ``runs:/`` or ``models:/`` URI, a run's output folder,
or a folder (or file) holding an exported model and its ``model_spec.json``; resolved to a model
spec and a runtime."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelab.checkpoints import FINISHED, RUN_FILE
from facelab.checkpoints import FOLDER as CHECKPOINTS
from facelab.errors import FacelabError
from facelab.modelspec import FILE as SPEC_FILE
from facelab.modelspec import ModelSpec

#: Export formats and the file (inside the export folder) that holds the model.
FORMAT_FILES = {"keras": "model.keras", "savedmodel": "saved_model.pb", "tflite": "model.tflite",
                "onnx": "model.onnx"}
#: Where the MLflow plugin logs a run's model spec and resolved recipe (artifact paths).
RUN_SPEC = "model_spec/model_spec.json"
RUN_RECIPE = "recipe/recipe.yaml"
RUN_ID = re.compile(r"^[0-9a-f]{4,32}$")
#: facelab's run ids (``Run.id``, a UUID), as ``run.json`` holds them.
FACELAB_RUN_ID = re.compile(r"^[0-9a-f-]{8,64}$")
EXPECTED = ("expected an MLflow run id, a runs:/ or models:/ URI, a run's output folder "
            "(holding run.json), or a folder made by `facelab export` (model_spec.json and "
            "the model)")


@dataclass
class ModelSource:
    """A resolved MODEL: its spec, its format and how to load it."""

    description: str  # e.g. "run 45d9a5cd (models:/m-877a...)", "export folder exports/tfl"
    spec: ModelSpec
    format: str  # keras | savedmodel | tflite | onnx
    location: str  # a local path, or an MLflow model URI
    #: the resolved recipe the model was trained with (YAML text), when known
    recipe_text: Callable[[], str | None] = lambda: None
    #: the MLflow run that trained the model, when a store knows it
    run_id: str | None = None
    #: the run's output folder, when it is on this machine
    output_dir: Path | None = None

    @property
    def is_mlflow(self) -> bool:
        return "://" in self.location or self.location.startswith(("models:/", "runs:/"))

    def keras_model(self):
        """The Keras model (a Keras source only)."""
        if self.format != "keras":
            raise FacelabError(f"{self.description} is a {self.format} export; this needs a Keras "
                               "model: give the run id or a keras export")
        if self.is_mlflow:
            from facelab.plugins.mlflow import tracking

            return tracking.load_model(self.location)
        from facelab.plugins.deploy.runtimes import load_keras

        return load_keras(Path(self.location))

    def runtime(self):
        """A callable: float32 images (N, H, W, C) in 0-255 -> {task: probabilities}."""
        from facelab.plugins.deploy.runtimes import KerasRuntime, load_runtime

        if self.format == "keras":
            return KerasRuntime(self.keras_model())
        return load_runtime(self.format, Path(self.location))


def resolve(model: str, tracking_uri: str | None = None) -> ModelSource:
    """MODEL as given on the command line -> a :class:`ModelSource`."""
    if model.startswith("runs:/"):
        run_id, _, name = model[len("runs:/"):].strip("/").partition("/")
        return _from_run(run_id, tracking_uri, name or "model")
    if model.startswith("models:/"):
        return _from_model_uri(model, tracking_uri)
    path = Path(model).expanduser()
    if (path / RUN_FILE).is_file():
        return from_run_folder(path, tracking_uri)
    if path.exists():
        return from_path(path)
    if RUN_ID.match(model):
        return _from_run(model, tracking_uri, "model")
    raise FacelabError(f"MODEL {model!r}: no such file or folder, and not a run id; {EXPECTED}")


# --------------------------------------------------------------------------------------------
# Exported models on disk
# --------------------------------------------------------------------------------------------

def from_path(path: Path) -> ModelSource:
    """An export folder (``model_spec.json`` and one model file), or one model file in it."""
    folder = path if path.is_dir() else path.parent
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise FacelabError(f"{path}: no {SPEC_FILE} in {folder}; {EXPECTED}. A model without its "
                           "spec cannot be used: its classes and face crop are unknown")
    spec = read_spec(spec_path)
    if path.is_file():
        formats = [f for f, name in FORMAT_FILES.items() if name == path.name]
        if not formats and path.suffix == ".keras":
            formats = ["keras"]
        if not formats:
            raise FacelabError(f"{path}: not a model file; expected one of "
                               f"{', '.join(FORMAT_FILES.values())} beside {SPEC_FILE}")
        return ModelSource(f"{path}", spec, formats[0], str(path))
    for fmt, name in FORMAT_FILES.items():
        if (folder / name).is_file():
            location = folder if fmt == "savedmodel" else folder / name
            return ModelSource(f"{folder} ({fmt})", spec, fmt, str(location))
    saved = sorted(folder.glob("*.keras"))  # e.g. a model saved by hand beside its spec
    if saved:
        return ModelSource(f"{saved[0]}", spec, "keras", str(saved[0]))
    raise FacelabError(f"{path}: has {SPEC_FILE} but no saved model (expected one of "
                       f"{', '.join(FORMAT_FILES.values())}); use the run id, or export one with "
                       f"`facelab export RUN_ID --format keras --output DIR`")


def read_spec(path: Path) -> ModelSpec:
    try:
        return ModelSpec.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FacelabError(f"{path}: not a valid model spec ({type(exc).__name__}: {exc}); "
                           "expected the model_spec.json facelab writes") from None


# --------------------------------------------------------------------------------------------
# A run's output folder
# --------------------------------------------------------------------------------------------

def from_run_folder(folder: Path, tracking_uri: str | None = None) -> ModelSource:
    """A finished run's output folder: the model its MLflow run logged, where the store knows
    the run (tag ``facelab.run_id``), else the checkpoint the run evaluated; the spec and the
    recipe from the folder."""
    where = folder / RUN_FILE
    try:
        info = json.loads(where.read_text(encoding="utf-8"))
        facelab_id, status, recipe_text = info["id"], info.get("status"), \
            info["recipe"]["resolved"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FacelabError(f"{where}: cannot read the run ({type(exc).__name__}: {exc}); "
                           "expected the run.json facelab writes") from None
    if not FACELAB_RUN_ID.match(str(facelab_id)):  # it goes into an MLflow search filter
        raise FacelabError(f"{where}: id {facelab_id!r} is not a facelab run id; expected the "
                           "run.json facelab writes")
    if status != FINISHED:
        raise FacelabError(f"{folder}: the run's status is {status}, not {FINISHED}; expected a "
                           f"finished run (resume it: `facelab run --resume {folder}`)")
    spec = read_spec(folder / SPEC_FILE)
    try:
        client = _client(tracking_uri)
    except FacelabError:  # no store here: the run was not tracked here
        client = None
    run = _tracked_run(client, facelab_id) if client is not None else None
    model_uri = _logged_model_uri(client, run) if run is not None else None
    location = model_uri or str(_evaluated_checkpoint(folder, recipe_text))
    where_from = model_uri or Path(location).relative_to(folder).as_posix()
    return ModelSource(f"run folder {folder} ({where_from})", spec, "keras", location,
                       lambda: recipe_text, run.info.run_id if run is not None else None, folder)


def _tracked_run(client, facelab_run_id: str):
    """The MLflow run of facelab's run ``facelab_run_id`` (tag ``facelab.run_id``), if the
    store knows it."""
    from facelab.plugins.mlflow import store
    from facelab.plugins.mlflow.tracking import RUN_ID_TAG

    experiments = store.experiment_ids(client, None)
    found = client.search_runs(experiments, f"tags.`{RUN_ID_TAG}` = '{facelab_run_id}'",
                               max_results=1) if experiments else []
    return found[0] if found else None


def _evaluated_checkpoint(folder: Path, recipe_text: str) -> Path:
    """The checkpoint holding what the run evaluated: with early stopping the best epoch's
    (Keras restores it when training ends; ``best`` exists only with a validation split), else
    the last epoch's."""
    from facelab.recipe import parse_yaml

    early_stopping = ((parse_yaml(recipe_text) or {}).get("train") or {}).get("early_stopping")
    names = ["best.keras", "last.keras"] if early_stopping else ["last.keras"]
    for name in names:
        if (folder / CHECKPOINTS / name).is_file():
            return folder / CHECKPOINTS / name
    raise FacelabError(f"{folder}: no model: no MLflow store here has the run's model and the "
                       f"run kept no checkpoint ({CHECKPOINTS}/{names[0]}); expected a run trained "
                       "with train.checkpoints: true, or --tracking-uri naming the store that "
                       "tracked it")


# --------------------------------------------------------------------------------------------
# MLflow runs and logged models
# --------------------------------------------------------------------------------------------

def _client(tracking_uri: str | None):
    import mlflow

    from facelab.plugins.mlflow import store

    uri = store.store_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)  # model URIs (models:/...) resolve against the same store
    return store.client(uri)


def _from_run(run_id: str, tracking_uri: str | None, name: str) -> ModelSource:
    from facelab.plugins.mlflow import store

    client = _client(tracking_uri)
    run = store.resolve_run(client, run_id)
    run_id = run.info.run_id
    model_uri = _logged_model_uri(client, run, name)
    if model_uri is None:
        raise FacelabError(f"run {run_id}: no logged model named {name!r} (was the run trained "
                           "with tracking.log_model: false, or did it fail?); expected a finished "
                           "run that logged its model")
    return _mlflow_source(client, run, model_uri, f"run {run_id[:8]} ({model_uri})")


def _logged_model_uri(client, run, name: str = "model") -> str | None:
    """``models:/<id>`` of the run's newest logged model called ``name``, if it has one."""
    models = [m for m in client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'") if m.name == name]
    return f"models:/{models[-1].model_id}" if models else None


def _from_model_uri(uri: str, tracking_uri: str | None) -> ModelSource:
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    rest = uri[len("models:/"):].strip("/")
    try:
        if "/" in rest:  # a registered model: models:/<name>/<version>
            name, version = rest.split("/", 1)
            run_id = client.get_model_version(name, version).run_id
        else:  # a LoggedModel: models:/<model id>
            run_id = client.get_logged_model(rest).source_run_id
    except MlflowException as exc:
        raise FacelabError(f"MODEL {uri}: not found in this store "
                           f"({exc.message.splitlines()[0]}); {EXPECTED}") from None
    return _mlflow_source(client, client.get_run(run_id) if run_id else None, uri, uri)


def _mlflow_source(client, run, model_uri: str, description: str) -> ModelSource:
    """A logged model (``run``: its source run, when known)."""
    from facelab.plugins.mlflow.tracking import OUTPUT_DIR_TAG

    run_id = run.info.run_id if run is not None else None
    spec = _logged_spec(model_uri)
    if spec is None and run_id:
        spec = _run_spec(client, run_id)
    if spec is None:
        raise FacelabError(f"{description}: no model spec, neither with the model nor as the run's "
                           f"artifact {RUN_SPEC} (the run predates model specs?); expected a "
                           "model trained by facelab, which records its classes and face crop")

    def recipe_text() -> str | None:
        return _download_text(client, run_id, RUN_RECIPE) if run_id else None

    folder = run.data.tags.get(OUTPUT_DIR_TAG) if run is not None else None
    output_dir = Path(folder) if folder and Path(folder).is_dir() else None
    return ModelSource(description, spec, "keras", model_uri, recipe_text, run_id, output_dir)


def _logged_spec(model_uri: str) -> ModelSpec | None:
    """The spec kept in the logged model's metadata (``facelab``), where the model has it."""
    import mlflow.models
    from mlflow.exceptions import MlflowException

    try:
        metadata = mlflow.models.get_model_info(model_uri).metadata or {}
    except (MlflowException, OSError) as exc:
        raise FacelabError(f"{model_uri}: cannot read the model ({exc})") from None
    value = metadata.get("facelab")
    return ModelSpec.from_json(value) if isinstance(value, dict) and "tasks" in value else None


def _run_spec(client, run_id: str) -> ModelSpec | None:
    text = _download_text(client, run_id, RUN_SPEC)
    if text is None:
        return None
    with tempfile.TemporaryDirectory(prefix="facelab-spec-") as folder:
        path = Path(folder) / SPEC_FILE
        path.write_text(text)
        return read_spec(path)


def _download_text(client, run_id: str, artifact: str) -> str | None:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="facelab-artifact-") as folder:
        try:
            return Path(client.download_artifacts(run_id, artifact, folder)).read_text()
        except (MlflowException, OSError):
            return None


def build_detector(spec: ModelSpec, cache_dir: Path | None = None) -> Any:
    """The model's own detector, built from its component spec exactly as training built it."""
    from facelab.context import BuildContext
    from facelab.manager import get_registry

    values = dict(spec.detector)
    name = values.pop("type", None)
    where = f"{SPEC_FILE} detector"
    component = get_registry().get("detector", str(name), where=where)
    detector = component.factory(component.validate(values, where),
                                 BuildContext(cache_dir=cache_dir or Path(".")))
    if tuple(detector.output_shape) != tuple(spec.input_shape):
        raise FacelabError(f"{where}: crops of shape {tuple(detector.output_shape)}, but the model "
                           f"takes {tuple(spec.input_shape)}; expected a spec written by facelab")
    return detector
