"""``facelab sensitivity``: how much a run's predictions depend on its face detector.

The run's test images (rebuilt from its recipe: the same seed gives the same split) are cropped
again by each detector asked for, classified by the run's model, and compared with the model's
predictions on the crops of the run's own detector: faces found, accuracy, and the share of
test faces whose predicted class changes (the flip rate), overall, per true class and per group.

Only click and numpy are imported here; TensorFlow, Keras, pandas, MLflow and matplotlib are
imported when the command runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import click
import numpy as np

import facelab
from facelab.errors import FacelabError

#: Files written into the run's output folder (the MLflow plugin logs them under sensitivity/).
JSON_FILE = "sensitivity.json"
FIGURE_FILE = "sensitivity.png"
DETECTOR_FORMAT = "expected NAME or NAME:{key: value, ...}, e.g. haar or 'haar:{min_neighbors: 3}'"
RUN_EXPECTED = ("expected a model that knows its training recipe: a finished run's output "
                "folder, its MLflow run id (a unique prefix will do), or a runs:/ or models:/ "
                "URI of its model")


# --------------------------------------------------------------------------------------------
# The numbers
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlipCount:
    """Of ``n`` test faces, ``flips`` changed their predicted class."""

    n: int
    flips: int

    @property
    def rate(self) -> float | None:
        return self.flips / self.n if self.n else None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "flips": self.flips, "flip_rate": self.rate}


def count_flips(flipped: np.ndarray, mask: np.ndarray | None = None) -> FlipCount:
    chosen = flipped if mask is None else flipped[mask]
    return FlipCount(int(len(chosen)), int(chosen.sum()))


@dataclass(frozen=True)
class TaskSensitivity:
    """One task under one detector, over the test images the detector gave a crop for."""

    accuracy: float | None  # of the predictions on this detector's crops (labelled rows)
    run_accuracy: float | None  # of the run's detector on the same rows
    flips: FlipCount
    per_class: dict[str, FlipCount]
    per_group: dict[str, dict[str, FlipCount]]

    def to_json(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "run_detector_accuracy": self.run_accuracy,
                **self.flips.to_json(),
                "per_class": {k: v.to_json() for k, v in self.per_class.items()},
                "per_group": {column: {k: v.to_json() for k, v in values.items()}
                              for column, values in self.per_group.items()}}


@dataclass(frozen=True)
class DetectorSensitivity:
    label: str  # as given on the command line
    detector: dict[str, Any]  # {type, params}: the resolved component
    images: int  # test images
    found: int  # images where the detector found a face
    compared: int  # images it gave a crop for (found faces and whole images kept)
    statuses: dict[str, int]
    tasks: dict[str, TaskSensitivity]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "detector": self.detector, "test_images": self.images,
                "faces_found": self.found, "compared": self.compared, "statuses": self.statuses,
                "tasks": {t: s.to_json() for t, s in self.tasks.items()}}


@dataclass
class SensitivityReport:
    run: dict[str, Any]  # description, output folder, MLflow run id
    run_detector: dict[str, Any]
    test_images: int
    detectors: list[DetectorSensitivity] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "run_detector": self.run_detector,
                "test_images": self.test_images,
                "detectors": [d.to_json() for d in self.detectors]}


def found_face(status: str | None) -> bool:
    """Detector statuses of images without a face start with "no face" (``mtcnn``, ``haar``);
    ``none`` keeps every image as its face."""
    return status is not None and not status.startswith("no face")


def task_groups(recipe, frame, task: str, tasks: dict) -> dict[str, np.ndarray]:
    """The groups of the fairness report for ``task`` (:func:`facelab.fairness.group_arrays`:
    ``evaluate.groups``, the other tasks, an age in years as age groups), its own classes
    aside: column -> each row's group name (``""``: unknown)."""
    from facelab.fairness import group_arrays

    groups, _ = group_arrays(frame, task, recipe.schema.evaluate.groups, tasks)
    groups.pop(task, None)
    return groups


def task_sensitivity(task, y_true: np.ndarray, predicted: np.ndarray, run_predicted: np.ndarray,
                     groups: dict[str, np.ndarray], tasks: dict | None = None) -> TaskSensitivity:
    """Flips of ``predicted`` against ``run_predicted`` (both over the same compared rows);
    groups in the fairness report's order (``tasks``: the table's, for class order)."""
    from facelab.data import NO_LABEL
    from facelab.fairness import levels

    flipped = predicted != run_predicted
    labelled = y_true != NO_LABEL
    per_class = {name: count_flips(flipped, y_true == i) for i, name in enumerate(task.classes)}
    per_group = {column: {value: count_flips(flipped, values == value)
                          for value in levels(values, column, tasks or {})}
                 for column, values in groups.items()}
    accuracy = float((predicted == y_true)[labelled].mean()) if labelled.any() else None
    run_accuracy = float((run_predicted == y_true)[labelled].mean()) if labelled.any() else None
    return TaskSensitivity(accuracy, run_accuracy, count_flips(flipped), per_class, per_group)


def measure(recipe, data, predict: Callable[[np.ndarray], dict[str, np.ndarray]],
            detectors: Sequence[tuple[str, dict, Any]], cache_dir: Path, progress,
            run: dict[str, Any]) -> SensitivityReport:
    """Crop the run's test images with every detector, predict, compare with the run's detector.

    ``data``: the run's prepared data (:func:`facelab.pipeline.prepare_data`); ``predict``:
    uint8 crops -> {task: predicted class}; ``detectors``: (label, resolved spec, detector).
    """
    from facelab.crops import crop_all

    rows = data.splits.plans["test"].base
    if len(rows) == 0:
        raise FacelabError("RUN: the run has no test split (data.split.test: 0); nothing to "
                           "compare on; expected a run with test images")
    frame = data.table.frame.iloc[rows].reset_index(drop=True)
    paths = list(frame["path"])
    with progress.phase("predicting on the run's own crops"):
        run_predicted = predict(data.images[rows])
    groups = {task: task_groups(recipe, frame, task, data.table.tasks) for task in recipe.tasks}
    report = SensitivityReport(run, recipe.detector.as_dict(), len(rows))
    for label, spec, detector in detectors:
        crops = crop_all(paths, detector, cache_dir, progress)
        statuses = [status if kept else None
                    for status, kept in zip(crops.row_statuses, crops.kept)]
        with progress.phase(f"predicting on the crops of {label}"):
            predicted = predict(crops.images) if len(crops.images) else {}
        kept = crops.kept
        tasks = {}
        for task in recipe.tasks:
            tasks[task] = task_sensitivity(
                data.tasks[task], frame[task].to_numpy()[kept],
                predicted.get(task, np.empty(0, np.int64)), run_predicted[task][kept],
                {c: values[kept] for c, values in groups[task].items()}, data.table.tasks)
        report.detectors.append(DetectorSensitivity(
            label, spec, len(rows), sum(map(found_face, statuses)), int(kept.sum()),
            dict(crops.statuses), tasks))
    return report


def batch_predictor(runtime, tasks: Sequence[str], batch_size: int
                    ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """uint8 crops -> {task: predicted class}, ``batch_size`` crops per call of ``runtime``."""
    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {task: [] for task in tasks}
        for start in range(0, len(images), batch_size):
            probs = runtime(images[start:start + batch_size].astype(np.float32))
            for task in tasks:
                parts[task].append(np.asarray(probs[task]).argmax(axis=1))
        return {task: np.concatenate(p) if p else np.empty(0, np.int64)
                for task, p in parts.items()}

    return predict


# --------------------------------------------------------------------------------------------
# --detector NAME[:PARAMS]
# --------------------------------------------------------------------------------------------

def detector_request(text: str) -> tuple[Any, dict[str, Any]]:
    """``NAME`` or ``NAME:{params}`` -> (the registered component, the parameters given)."""
    from facelab.manager import get_registry
    from facelab.recipe import parse_yaml

    name, _, params_text = text.partition(":")
    if not name.strip():
        raise FacelabError(f"--detector {text}: no detector name; {DETECTOR_FORMAT}")
    component = get_registry().get("detector", name.strip(), where="--detector")
    try:
        values = parse_yaml(params_text) if params_text.strip() else {}
    except Exception as exc:  # yaml.YAMLError and the loader's own limits
        raise FacelabError(f"--detector {text}: unreadable parameters "
                           f"({str(exc).splitlines()[0]}); {DETECTOR_FORMAT}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise FacelabError(f"--detector {text}: parameters must be a mapping, got "
                           f"{type(values).__name__}; {DETECTOR_FORMAT}")
    return component, values


def build_detector(text: str, recipe, input_shape: Sequence[int], cache_dir: Path
                   ) -> tuple[str, dict, Any]:
    """``--detector`` text -> (label, resolved spec, detector). Size and colour, when not given,
    are the run's, so the crops fit the model."""
    from facelab.context import BuildContext

    component, values = detector_request(text)
    where = f"--detector {component.name}"
    run_values = recipe.detector.params.model_dump(mode="json")
    fitting = {"size": list(input_shape[:2]), "colour": "grey" if input_shape[2] == 1 else "rgb"}
    for key, default in fitting.items():
        if key in component.params.model_fields and key not in values:
            values[key] = run_values.get(key, default)
    params = component.validate(values, where)
    detector = component.factory(params, BuildContext(cache_dir=cache_dir))
    if tuple(detector.output_shape) != tuple(input_shape):
        raise FacelabError(f"{where}: crops of shape {tuple(detector.output_shape)}, but the "
                           f"model takes {tuple(input_shape)}; expected the run's size and colour")
    return text, {"type": component.name, **params.model_dump(mode="json")}, detector


# --------------------------------------------------------------------------------------------
# RUN: what `facelab predict` takes as MODEL, with the recipe that trained it
# --------------------------------------------------------------------------------------------

def resolve_run(ref: str, tracking_uri: str | None):
    """RUN as given -> (its :class:`~facelab.plugins.deploy.model_source.ModelSource`, its
    recipe). The model source must know the recipe: an export holds none."""
    from facelab.manager import get_registry
    from facelab.plugins.deploy.model_source import resolve
    from facelab.recipe import parse_yaml, validate_recipe

    source = resolve(ref, tracking_uri)
    text = source.recipe_text()
    if text is None:
        raise FacelabError(f"RUN {ref}: {source.description} holds no recipe, so its test "
                           f"images are unknown; {RUN_EXPECTED}")
    where = f"{source.description}: recipe"
    try:
        raw = parse_yaml(text)
    except Exception as exc:  # yaml.YAMLError and the loader's own limits
        raise FacelabError(f"{where}: unreadable ({str(exc).splitlines()[0]})") from None
    return source, validate_recipe(raw, get_registry(), where=where)


# --------------------------------------------------------------------------------------------
# Outputs: files, MLflow artifacts, the model card, the terminal
# --------------------------------------------------------------------------------------------

def plot(report: SensitivityReport, path: Path) -> Path:
    """Flip rates per detector: overall, per true class and per group, one panel per task."""
    from facelab.plugins.reports.drawing import plt, save_figure

    tasks = list(report.detectors[0].tasks) if report.detectors else []
    fig, axes = plt.subplots(len(tasks) or 1, 1, figsize=(10, 3.2 * max(1, len(tasks))),
                             squeeze=False)
    width = 0.8 / max(1, len(report.detectors))
    for ax, task in zip(axes[:, 0], tasks):
        labels = _bar_labels(report, task)
        highest = 0.0
        for i, result in enumerate(report.detectors):
            counts = [_count(result.tasks[task], key) for key in labels]
            rates = [(count.rate if count is not None else None) or 0.0 for count in counts]
            highest = max(highest, *rates)
            ax.bar(np.arange(len(labels)) + i * width, rates, width, label=result.label)
        ax.set_xticks(np.arange(len(labels)) + width * (len(report.detectors) - 1) / 2)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("flip rate")
        ax.set_ylim(0, min(1.0, max(0.05, 1.25 * highest)))  # small rates stay visible
        ax.set_title(f"{task}: predictions that change against the run's detector "
                     f"({report.run_detector.get('type')})", fontsize=10)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _bar_labels(report: SensitivityReport, task: str) -> list[str]:
    first = report.detectors[0].tasks[task]
    return ["all", *first.per_class,
            *(f"{column}={value}" for column, values in first.per_group.items()
              for value in values)]


def _count(result: TaskSensitivity, key: str) -> FlipCount | None:
    """The flips behind a label of :func:`_bar_labels` (None: this detector has no such row)."""
    if key == "all":
        return result.flips
    if key in result.per_class:
        return result.per_class[key]
    column, _, value = key.partition("=")
    return result.per_group.get(column, {}).get(value)


def write_outputs(report: SensitivityReport, folder: Path) -> list[Path]:
    """``sensitivity.json`` and ``sensitivity.png`` in ``folder`` (each written atomically)."""
    from facelab.files import write_json

    write_json(folder / JSON_FILE, report.to_json())
    return [folder / JSON_FILE, plot(report, folder / FIGURE_FILE)]


def log_to_mlflow(run_id: str, tracking_uri: str | None, files: list[Path]) -> list[str]:
    """Each file where an upload of its whole folder puts it (the MLflow plugin's layout:
    ``sensitivity/``, the model card at the top); returns the artifact paths."""
    from facelab.plugins.mlflow import store
    from facelab.plugins.mlflow.tracking import artifact_layout

    client = store.client(tracking_uri)
    layout = {}
    for folder in {path.parent for path in files}:
        layout.update(artifact_layout(folder))
    for path in files:
        folder = PurePosixPath(layout[path]).parent.as_posix()
        client.log_artifact(run_id, str(path), None if folder == "." else folder)
    return [layout[path] for path in files]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _flip_cell(count: FlipCount | None) -> str:
    if count is None or count.rate is None:
        return "-"
    return f"{_percent(count.rate)} ({count.flips}/{count.n})"


def tables(report: SensitivityReport) -> list:
    """The summary (one row per detector and task), then per task the flip rates per true
    class and group, one column per detector."""
    from facelab.tables import PlainTable

    summary = PlainTable(
        title=f"detector sensitivity of {report.run['description']}: {report.test_images} test "
              f"images, run's detector {report.run_detector.get('type')}",
        caption="found: faces found; compared: images cropped (found, or kept whole); run's: "
                "the accuracy of the run's detector on the same images; flips: predictions "
                "that changed", expand=True)
    for column in ("detector", "task", "found", "compared", "accuracy", "run's", "flips",
                   "flip rate"):
        summary.add_column(column, justify="left" if column in ("detector", "task") else "right",
                           overflow="fold", ratio=4 if column == "detector" else None)
    for result in report.detectors:
        for task, s in result.tasks.items():
            summary.add_row(result.label, task, f"{result.found}/{result.images}",
                            str(result.compared), _percent(s.accuracy), _percent(s.run_accuracy),
                            f"{s.flips.flips}/{s.flips.n}", _percent(s.flips.rate))
    out = [summary]
    for task in (report.detectors[0].tasks if report.detectors else {}):
        detail = PlainTable(title=f"{task}: flip rate (flips/faces) by true class and group")
        detail.add_column("rows")
        for result in report.detectors:
            detail.add_column(result.label, justify="right")
        for key in _bar_labels(report, task)[1:]:
            cells = [_flip_cell(_count(result.tasks[task], key)) for result in report.detectors]
            detail.add_row(key if "=" in key else f"{task}={key}", *cells)
        out.append(detail)
    return out


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--detector", "detectors", multiple=True, required=True, metavar="NAME[:PARAMS]",
              help="A detector to crop the test images with: its name, optionally with "
                   "parameters as a YAML mapping ('haar:{min_neighbors: 3}'). Size and colour "
                   "default to the run's. Repeatable.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="Face crops classified at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--tracking-uri", "uri", metavar="URI",
              help="MLflow store, for run ids and for the model of a run folder (default: "
                   "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).")
def sensitivity(run_ref: str, detectors: tuple[str, ...], batch_size: int, as_json: bool,
                uri: str | None) -> None:
    """How much a run's predictions depend on its face detector.

    RUN is a finished run's output folder, its MLflow run id, or any MODEL of `facelab predict`
    that knows its training recipe. Its test images (the same split, rebuilt from its recipe) are
    cropped by each --detector and classified by the run's model; per detector it reports the faces
    found, the accuracy, and the flip rate: the share of test faces whose predicted class differs
    from the prediction on the run's own detector's crop, overall, per true class and per group
    (the fairness report's groups: evaluate.groups, the dataset's other labels, age groups). Writes
    sensitivity.json and sensitivity.png into the run's output folder, logs them to its MLflow run
    under sensitivity/, and refreshes the model card.

    \b
    Example:
      facelab sensitivity 45d9a5cd --detector haar --detector mtcnn
      facelab sensitivity runs/quickstart-20250101-120000 --detector 'haar:{min_neighbors: 3}'
    """
    import os
    import tempfile

    from facelab.cli import console, err_console, quiet_tensorflow
    from facelab.console import RichProgress
    from facelab.plugins.responsible.model_card import write_model_card

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if len(set(detectors)) != len(detectors):
        raise FacelabError("--detector: the same detector is given twice; give each once")
    for text in detectors:  # names and syntax, before the run is looked up
        detector_request(text)
    quiet_tensorflow()  # before anything imports it (the pipeline imports Keras)
    from facelab.pipeline import make_context, prepare_data

    source, recipe = resolve_run(run_ref, uri)
    progress = RichProgress(err_console)
    ctx = make_context(recipe, progress)
    chosen = [build_detector(text, recipe, source.spec.input_shape, ctx.cache_dir)
              for text in detectors]
    predict = batch_predictor(source.runtime(), recipe.tasks, batch_size)
    data = prepare_data(recipe, ctx)
    output_dir, mlflow_run_id = source.output_dir, source.run_id
    report = measure(recipe, data, predict, chosen, ctx.cache_dir, progress,
                     {"description": source.description, "mlflow_run_id": mlflow_run_id,
                      "output_dir": str(output_dir) if output_dir else None})
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for table in tables(report):
            console.print(table)
    with tempfile.TemporaryDirectory(prefix="facelab-sensitivity-") as staging:
        folder = output_dir or Path(staging)  # a run whose folder is elsewhere: MLflow only
        files = write_outputs(report, folder)
        if output_dir:
            files.append(write_model_card(output_dir))  # with these
        logged = log_to_mlflow(mlflow_run_id, uri, files) if mlflow_run_id else []
        where = f"wrote {', '.join(map(str, files))}" if output_dir else "no output folder here"
        if logged:
            where += f"; logged to MLflow run {mlflow_run_id[:8]}: {', '.join(logged)}"
        err_console.print(where, highlight=False, soft_wrap=True, markup=False)


@facelab.hookimpl
def register_commands(cli):
    cli.add_command(sensitivity)
