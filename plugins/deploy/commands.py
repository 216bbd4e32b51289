"""The deploy plugin's commands: ``facelab predict`` and ``facelab export``.

Only click and the CLI's console are imported here; TensorFlow, Keras, MLflow and the export
runtimes are imported when a command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.text import Text

from facelab.cli import console, err_console, quiet_tensorflow
from facelab.errors import FacelabError
from facelab.files import write_bytes
from facelab.tables import PlainTable

TRACKING_URI = click.option(
    "--tracking-uri", "uri", metavar="URI",
    help="MLflow store, for run ids, runs:/ or models:/ URIs and the model a run folder logged "
         "(default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).")
MODEL = click.argument("model")


def _warn(message: str) -> None:
    err_console.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False,
                      soft_wrap=True)


def _note(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True, markup=False)


def _resolve(model: str, uri: str | None):
    import os

    from facelab.plugins.deploy.model_source import resolve

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    quiet_tensorflow()
    return resolve(model, uri)


@click.command()
@MODEL
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_FOLDER...",
                type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--csv", "csv_file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE", help="Write the rows to a CSV file.")
@click.option("--annotate", "annotate_dir", type=click.Path(path_type=Path, file_okay=False),
              metavar="DIR", help="Write each photo with its boxes and labels drawn (PNG) here.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="Face crops classified at once.")
@TRACKING_URI
def predict(model: str, inputs: tuple[Path, ...], as_json: bool, csv_file: Path | None,
            annotate_dir: Path | None, batch_size: int, uri: str | None) -> None:
    """Find every face in photos, crop it as the model's training did, classify it for every task.

    MODEL is an MLflow run id (or a unique prefix), a runs:/ or models:/ URI, a finished run's
    output folder, or a folder made by `facelab export` (any format). The model's spec gives its
    tasks, class names, input size and detector, so a model moved to another machine predicts the
    same. Folders are searched recursively for jpg, jpeg, png, bmp and webp files; other files are
    skipped and counted.

    \b
    Example:
      facelab predict 45d9a5cd photos/ --csv predictions.csv --annotate annotated/
      facelab predict exports/race-tflite group.jpg --json
      facelab predict runs/quickstart-20250101-120000 group.jpg
    """
    from facelab.plugins.deploy import predict as predicting

    if as_json and csv_file is not None:
        raise FacelabError("--json and --csv: give one of them")
    files, skipped, folders = predicting.find_files(inputs)
    for path, reason in skipped:
        _warn(f"skipped {path}: {reason}")
    if not files:
        raise FacelabError(f"no photo among {', '.join(map(str, inputs))}; expected image files "
                           f"({', '.join(predicting.IMAGE_SUFFIXES)}) or folders of them")
    source = _resolve(model, uri)
    detector = _model_detector(source)
    runtime = source.runtime()
    if folders:
        from facelab.console import RichProgress

        files = RichProgress(err_console).track(files, "predicting", total=len(files))
    result = predicting.predict_files(files, detector, runtime, source.spec,
                                      batch_size=batch_size, warn=_warn)
    result.skipped[:0] = skipped
    rows = [face.row(source.spec) for face in result.faces]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        console.print(_table(rows, source))
    if csv_file is not None:
        write_bytes(csv_file, predicting.csv_bytes(rows))
        _note(f"wrote {csv_file} ({len(rows)} rows)")
    if annotate_dir is not None:
        names = predicting.annotation_names([f.file for f in result.faces], inputs)
        written = predicting.annotate(result, source.spec, annotate_dir, names)
        _note(f"annotated {len(written)} photos in {annotate_dir}")
    faces = len(result.faces) - result.without_face
    _note(f"{result.photos} photos, {faces} faces, {result.without_face} without a face; "
          f"{len(result.skipped)} files skipped (not an image)")


def _model_detector(source):
    from facelab.plugins.deploy.model_source import build_detector

    return build_detector(source.spec)


def _table(rows: list[dict], source) -> PlainTable:
    table = PlainTable(title=f"predictions of {source.description}")
    for column in ("file", "face", "box (x, y, w, h)", "confidence"):
        table.add_column(column, overflow="fold", justify="left" if column == "file" else "right")
    for task in source.spec.tasks:
        table.add_column(task)
        table.add_column("p", justify="right")
    for row in rows:
        box = "-" if row["x"] is None else \
            f"{row['x']}, {row['y']}, {row['width']}, {row['height']}"
        confidence = "-" if row["confidence"] is None else f"{row['confidence']:.3f}"
        cells = [row["file"], "-" if row["face"] is None else str(row["face"]), box, confidence]
        for task in source.spec.tasks:
            if row[task] is None:
                cells += [row["status"], ""]
            else:
                cells += [row[task], f"{row[f'{task}_probability']:.3f}"]
        table.add_row(*cells)
    return table


@click.command()
@MODEL
@click.option("--format", "fmt", required=True,
              type=click.Choice(["keras", "savedmodel", "tflite", "onnx"]),
              help="keras (.keras), savedmodel (TensorFlow), tflite (TFLite, float32) or onnx "
                   "(needs the 'export' extra).")
@click.option("--output", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="A new folder: the model file and its model_spec.json go in it.")
@click.option("--images", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="Photos or folders to crop for the comparison (default: the first images of "
                   "the run's training data). Repeatable.")
@click.option("--tolerance", type=float, hidden=True,
              help="Override the largest allowed difference (tests).")
@TRACKING_URI
def export(model: str, fmt: str, output: Path, images: tuple[Path, ...],
           tolerance: float | None, uri: str | None) -> None:
    """Export a trained model for inference and check it against the Keras model.

    MODEL is an MLflow run id, a runs:/ or models:/ URI, a finished run's output folder, or a keras
    export folder. The export holds the network only (no optimizer, loss or metrics) and
    model_spec.json. It is reloaded with its own runtime (Keras, TensorFlow, the TFLite
    interpreter, onnxruntime) and compared with the Keras model on real face crops; beyond the
    format's tolerance nothing is written and the exit code is 1.

    \b
    Example:
      facelab export 45d9a5cd --format tflite --output exports/race-tflite
      pip install 'facelab[export]' && facelab export 45d9a5cd --format onnx --output exports/onnx
    """
    from facelab.plugins.deploy import export as exporting
    from facelab.plugins.deploy.runtimes import require_onnx

    if fmt == "onnx":
        require_onnx()  # before loading anything
    exporting.check_output(output)
    source = _resolve(model, uri)
    crops = exporting.comparison_crops(source, images)
    keras_model = source.keras_model()
    try:
        done = exporting.export_model(keras_model, source.spec, fmt, output, crops, tolerance)
    except exporting.ExportMismatch as exc:
        err_console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False,
                          soft_wrap=True)
        sys.exit(1)
    console.print(f"exported {source.description} as {fmt} to {done.path}: max |difference| "
                  f"{done.max_difference:.3g} on {done.crops} crops (tolerance "
                  f"{done.tolerance:g})", highlight=False, soft_wrap=True)
