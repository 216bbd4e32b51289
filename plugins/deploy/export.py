"""``facelab export``: write a model for inference (Keras, SavedModel, TFLite or ONNX) with its
``model_spec.json``, reload it with its own runtime and compare it with the Keras model on real
crops. The export is written to a temporary sibling folder and renamed only when it matches."""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.modelspec import FILE as SPEC_FILE

FORMATS = ("keras", "savedmodel", "tflite", "onnx")
#: Largest absolute difference allowed between the export's probabilities and the Keras model's,
#: on the same float32 crops:
#: - keras: the same weights and graph, reloaded; only kernel scheduling may differ (none seen).
#: - savedmodel: the same TensorFlow ops traced into a graph; grappler may fuse or reorder float32
#:   sums, so differences of a few float32 ulps (~1e-7 on probabilities) are expected.
#: - tflite: the default float32 conversion (no quantisation), run by TFLite's own (XNNPACK)
#:   kernels, which sum convolutions in another order: ~1e-7 measured, allowed up to 1e-4.
#: - onnx: tf2onnx rewrites the graph and onnxruntime has its own kernels: as for TFLite.
#: A real conversion bug (a wrong layout, a missing op, a swapped output) moves probabilities by
#: 1e-2 or more, far above these.
TOLERANCES = {"keras": 1e-6, "savedmodel": 1e-5, "tflite": 1e-4, "onnx": 1e-4}
#: How many real crops the export is compared on.
COMPARE_CROPS = 32


class ExportMismatch(Exception):
    """The reloaded export differs from the Keras model beyond the tolerance (exit code 1)."""


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    max_difference: float
    tolerance: float
    crops: int


def inference_model(model):
    """The trained network alone: same layers and weights, no optimizer, loss or metrics."""
    import keras

    return keras.Model(model.input, model.output, name=model.name)


def _write(model, fmt: str, folder: Path) -> Path:
    """Write ``model`` in ``fmt`` into ``folder`` (which exists); the path a runtime loads."""
    if fmt == "keras":
        path = folder / "model.keras"
        model.save(path)
        return path
    if fmt == "savedmodel":
        model.export(str(folder), format="tf_saved_model", verbose=False)
        return folder
    if fmt == "tflite":
        import tensorflow as tf

        # The Keras 3 way: a SavedModel export, converted by TensorFlow's converter; default
        # options (float32 weights and ops, no quantisation), so it predicts as Keras does.
        with tempfile.TemporaryDirectory(prefix="facelab-savedmodel-") as saved:
            model.export(saved, format="tf_saved_model", verbose=False)
            flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
        path = folder / "model.tflite"
        path.write_bytes(flatbuffer)
        return path
    if fmt == "onnx":
        path = folder / "model.onnx"
        with warnings.catch_warnings():  # tf2onnx's NumPy deprecation notices
            warnings.simplefilter("ignore", FutureWarning)
            model.export(str(path), format="onnx", verbose=False)  # Keras drives tf2onnx
        return path
    raise ValueError(fmt)


def max_difference(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    if set(expected) != set(got):
        raise ExportMismatch(f"outputs {sorted(got)} instead of {sorted(expected)}")
    worst = 0.0
    for task, values in expected.items():
        if got[task].shape != values.shape:
            raise ExportMismatch(f"output {task!r} has shape {got[task].shape}, expected "
                                 f"{values.shape}")
        worst = max(worst, float(np.max(np.abs(got[task].astype(np.float64) - values))))
    return worst


def export_model(model, spec, fmt: str, output: Path, crops: np.ndarray,
                 tolerance: float | None = None) -> Exported:
    """Export, reload with the format's runtime, compare on ``crops`` (uint8), then rename into
    place; on a mismatch beyond ``tolerance`` nothing is left behind and ExportMismatch is
    raised."""
    from facelab.plugins.deploy.runtimes import KerasRuntime, load_runtime, require_onnx

    if fmt not in FORMATS:
        raise FacelabError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    check_output(output)
    tolerance = TOLERANCES[fmt] if tolerance is None else tolerance
    images = np.asarray(crops).astype(np.float32)
    network = inference_model(model)
    expected = KerasRuntime(model)(images)
    network.predict_on_batch(images[:1])  # ONNX export needs a model that has been called
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        written = _write(network, fmt, staging)
        (staging / SPEC_FILE).write_text(_spec_text(spec))
        difference = max_difference(expected, load_runtime(fmt, written)(images))
        if not difference <= tolerance:
            raise ExportMismatch(f"{fmt} export differs from the Keras model by up to "
                                 f"{difference:.3g} on {len(images)} crops, beyond the tolerance "
                                 f"{tolerance:g}; nothing written to {output}")
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(output, fmt, difference, tolerance, len(images))


def _spec_text(spec) -> str:
    import json

    return json.dumps(spec.to_json(), indent=2)


def check_output(output: Path) -> None:
    if output.exists():
        raise FacelabError(f"--output {output}: already exists; expected a new folder (remove it "
                           "or choose another name)")
    if output.suffix.lower() in {".keras", ".tflite", ".onnx", ".pb"}:
        raise FacelabError(f"--output {output}: give a folder name; the export writes the model "
                           f"and {SPEC_FILE} into it (e.g. --output exports/{output.stem})")


# --------------------------------------------------------------------------------------------
# Real crops to compare on
# --------------------------------------------------------------------------------------------

def comparison_crops(source, images: tuple[Path, ...], limit: int = COMPARE_CROPS) -> np.ndarray:
    """Up to ``limit`` real crops: the model's detector on ``images``, else the first images of
    the data the model was trained on (its recipe's datasets, through the crop cache)."""
    if images:
        return _crops_of_photos(source, images, limit)
    text = source.recipe_text()
    if not text:
        raise FacelabError(f"{source.description}: its training recipe is unknown, so there are no "
                           "crops to compare the export on; pass --images PHOTO_OR_FOLDER")
    try:
        return _crops_of_training_data(text, limit)
    except (FacelabError, OSError) as exc:
        raise FacelabError(f"{source.description}: cannot read its training data to compare the "
                           f"export on ({exc}); pass --images PHOTO_OR_FOLDER") from None


def _crops_of_photos(source, images: tuple[Path, ...], limit: int) -> np.ndarray:
    from facelab.images import UNREADABLE, read_rgb
    from facelab.plugins.deploy.model_source import build_detector
    from facelab.plugins.deploy.predict import detect_faces, find_files

    detector = build_detector(source.spec)
    files, _, _ = find_files(images)
    crops = []
    for path in files:
        try:
            image = read_rgb(path)
        except UNREADABLE:
            continue
        crops += [d.crop for d in detect_faces(detector, image)]
        if len(crops) >= limit:
            break
    if not crops:
        raise FacelabError(f"--images: no face found in {', '.join(map(str, images))}; expected "
                           "photos with faces")
    return np.stack(crops[:limit])


def _crops_of_training_data(recipe_text: str, limit: int) -> np.ndarray:
    from facelab.context import QuietProgress
    from facelab.crops import crop_all
    from facelab.pipeline import load_table, make_context
    from facelab.recipe import load_recipe

    with tempfile.TemporaryDirectory(prefix="facelab-recipe-") as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(recipe_text)
        recipe = load_recipe(path)
    ctx = make_context(recipe, QuietProgress())
    paths = list(load_table(recipe, ctx).frame["path"])
    rows = np.unique(np.linspace(0, len(paths) - 1, min(limit, len(paths))).round().astype(int))
    result = crop_all([paths[i] for i in rows], recipe.detector.build(ctx), ctx.cache_dir,
                      ctx.progress)
    if not len(result.images):
        raise FacelabError("no usable crop among them")
    return result.images
