"""What the model looks at: Grad-CAM overlays (and CBAM's spatial attention, where the model
has it) for a run's test predictions (``evaluate.explain: N``) and for given photos
(``facelab explain MODEL IMAGE...``).

When a run finishes, N correct and N wrong test predictions per task (the first ones in the
test split's order) are drawn into ``<run>/explain/<task>_correct.png`` and
``<task>_wrong.png``; the MLflow plugin logs the output folder after this observer, so they
reach the run's ``explain/`` artifacts. Each map explains the class the model predicted.

Only click and numpy are imported here; TensorFlow, Keras and matplotlib when something is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

import facelab
from facelab.errors import FacelabError

if TYPE_CHECKING:
    from facelab.plugins.deploy.predict import Prediction

#: The folder, in a run's outputs, that holds the overlays.
FOLDER = "explain"
GRAD_CAM = "Grad-CAM"
ATTENTION = "CBAM spatial attention"


def overlay_maps(explained, task_names: list[str], rows=slice(None)) -> dict[str, np.ndarray]:
    """The maps to draw, by panel name: Grad-CAM per task (one task: just "Grad-CAM"), then the
    spatial attention map where the model has one."""
    maps = {GRAD_CAM if len(task_names) == 1 else f"{GRAD_CAM} {task}":
            explained.heatmaps[task][rows] for task in task_names}
    if explained.attention is not None:
        maps[ATTENTION] = explained.attention[rows]
    return maps


# --------------------------------------------------------------------------------------------
# A run's test predictions
# --------------------------------------------------------------------------------------------

def explain_test_predictions(recipe, model, data, probabilities: dict[str, np.ndarray],
                             folder: Path, count: int) -> list[Path]:
    """Overlay grids of the first ``count`` correct and wrong test predictions per task."""
    from facelab.plugins.reports import drawing
    from facelab.plugins.responsible.gradcam import GradCam

    cam = GradCam(model)
    plan = data.splits.plans["test"]
    written = []
    for task in recipe.tasks:
        classes = data.tasks[task].classes
        y_true = data.split_labels("test", task)
        probs = probabilities[task]
        y_pred = probs.argmax(axis=1)
        for kind, mask in (("correct", y_true == y_pred), ("wrong", y_true != y_pred)):
            rows = np.flatnonzero(mask & (y_true >= 0))[:count]
            if len(rows) == 0:
                continue
            images = data.images[plan.base[rows]]
            explained = cam.explain(images.astype(np.float32), {task: y_pred[rows]})
            titles = [f"true: {classes[t]}\npred: {classes[p]} {probs[r, p]:.2f}"
                      for r, t, p in zip(rows, y_true[rows], y_pred[rows])]
            written.append(drawing.plot_overlays(
                images, overlay_maps(explained, [task]), titles,
                folder / f"{task}_{kind}.png",
                title=f"{task}: {kind} test predictions, what the predicted class rests on",
                colours=["tab:green" if kind == "correct" else "tab:red"] * len(rows)))
    return written


@facelab.hookimpl
def run_finished(run, result, outputs):
    count = run.recipe.schema.evaluate.explain
    if not count or "test" not in outputs.probabilities:
        return
    explain_test_predictions(run.recipe, outputs.model, outputs.data,
                             outputs.probabilities["test"], run.output_dir / FOLDER, count)


# --------------------------------------------------------------------------------------------
# facelab explain
# --------------------------------------------------------------------------------------------

def explain_photos(files, source, detector, tasks: list[str], folder: Path,
                   names: dict[str, str], batch_size: int = 32) -> tuple[list[Path], Prediction]:
    """Every face in ``files``, cropped as ``facelab predict`` crops it, with one overlay per
    face in ``folder`` (``<photo>_face<k>.png``); returns the files written and the
    prediction (its rows and skipped files)."""
    from facelab.plugins.deploy.predict import predict_files
    from facelab.plugins.reports import drawing
    from facelab.plugins.responsible.gradcam import GradCam

    cam = GradCam(source.keras_model())
    batches = []

    def runtime(images: np.ndarray) -> dict[str, np.ndarray]:
        batches.append(cam.explain(images))
        return batches[-1].probabilities

    prediction = predict_files(files, detector, runtime, source.spec, batch_size=batch_size,
                               keep_crops=True)
    faces = [face for face in prediction.faces if face.face is not None]
    written = []
    offset = 0
    for batch in batches:
        for i in range(len(batch.explained[tasks[0]])):
            face, crop = faces[offset + i], prediction.crops[offset + i]
            classes = source.spec.tasks
            title = ", ".join(
                f"{task}: {classes[task][batch.explained[task][i]]} "
                f"{batch.probabilities[task][i, batch.explained[task][i]]:.2f}" for task in tasks)
            stem = Path(names[face.file]).with_suffix("")
            written.append(drawing.plot_overlays(
                crop[None], overlay_maps(batch, tasks, slice(i, i + 1)), [title],
                folder / f"{stem}_face{face.face}.png",
                title=f"{Path(face.file).name}, face {face.face}"))
        offset += len(batch.explained[tasks[0]])
    return written, prediction


@click.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_FOLDER...",
                type=click.Path(path_type=Path))
@click.option("--output", "output", default=Path("explain"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Folder for the overlays (one PNG per face).")
@click.option("--task", "chosen", multiple=True, metavar="TASK",
              help="Explain only this task (repeatable; default: every task).")
@click.option("--tracking-uri", "uri", metavar="URI",
              help="MLflow store, for run ids, runs:/ or models:/ URIs and the model a run "
                   "folder logged (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                   "here).")
def explain(model: str, inputs: tuple[Path, ...], output: Path, chosen: tuple[str, ...],
            uri: str | None) -> None:
    """Show what a model looks at: a Grad-CAM overlay for every face in photos.

    Each face is found and cropped by the model's own detector, exactly as `facelab predict`
    crops it, and classified; its overlay shows the crop, where the evidence for each predicted
    class lies (Grad-CAM, red = most), and CBAM's spatial attention where the model has CBAM.
    MODEL is an MLflow run id, a runs:/ or models:/ URI, a finished run's output folder, or a
    Keras export folder.

    \b
    Example:
      facelab explain 45d9a5cd group.jpg photos/ --output explain/
      facelab explain exports/race-keras face.png --task race
    """
    import os

    from rich.text import Text

    from facelab.cli import err_console, quiet_tensorflow
    from facelab.errors import did_you_mean
    from facelab.plugins.deploy import predict as predicting
    from facelab.plugins.deploy.model_source import build_detector, resolve

    files, skipped, _ = predicting.find_files(inputs)
    if not files:
        raise FacelabError(f"no photo among {', '.join(map(str, inputs))}; expected image files "
                           f"({', '.join(predicting.IMAGE_SUFFIXES)}) or folders of them")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    quiet_tensorflow()
    source = resolve(model, uri)
    tasks = list(chosen) or list(source.spec.tasks)
    for task in tasks:
        if task not in source.spec.tasks:
            raise FacelabError(f"--task: {did_you_mean(task, source.spec.tasks, what='task')}")
    names = predicting.annotation_names([str(f) for f in files], inputs)
    written, prediction = explain_photos(files, source, build_detector(source.spec),
                                         list(dict.fromkeys(tasks)), output, names)
    for path, reason in [*skipped, *prediction.skipped]:
        err_console.print(Text.assemble(("warning:", "yellow"), f" skipped {path}: {reason}"),
                          highlight=False, soft_wrap=True)
    err_console.print(f"{prediction.photos} photos, {len(written)} faces explained, "
                      f"{prediction.without_face} without a face; overlays in {output}",
                      highlight=False, markup=False, soft_wrap=True)


@facelab.hookimpl
def register_commands(cli):
    cli.add_command(explain)
