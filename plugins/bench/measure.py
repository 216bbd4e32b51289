"""The measurements of ``facelab bench``: a recipe's model on synthetic images of its input size,
timed facelab's way and with a plain Keras loop, in interleaved rounds (medians).

* training images/s: ``pipeline.build_models`` + ``make_dataset`` + ``fit`` (what ``facelab
  run`` does) vs a freshly built copy of the same network compiled with Keras's own sparse
  cross-entropy and accuracy, fed by ``from_tensor_slices(...).map(cast)``; the recipe's
  augmentation on both sides, where ``train.augment_on`` puts it (model or pipeline);
* inference ms/image and FPS at ``evaluate.batch_size``: ``facelab.evaluate.inference_speed``
  on facelab's model vs a plain ``predict_on_batch`` loop on the plain copy (the same Keras
  call: a ratio near 1 says facelab's model adds nothing at inference);
* input pipeline images/s: iterating ``make_dataset`` vs the plain ``tf.data`` pipeline (with
  the augmentation on both sides when it runs in the pipeline), over at least
  :data:`PIPELINE_BATCHES` batches;
* parameters, the race paper's eq. 7 RAM, and the device's name.

No data are read: images are random uint8 of the recipe's input shape and labels random per
task class count (the datasets' declared tasks). TensorFlow is imported only when measuring.
"""

from __future__ import annotations

import io
import logging
import re
import socket
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import facelab
from facelab.errors import FacelabError

#: Batches per round the input pipelines are timed over, at least.
PIPELINE_BATCHES = 16
#: Stands in for unset ``${VAR}`` data paths: bench reads no data.
NO_DATA_PATH = "/nonexistent-facelab-bench-reads-no-data"
_ENV_UNSET = re.compile(r"environment variable ([A-Za-z_][A-Za-z0-9_]*) is not set")


class BenchSettings(facelab.Params):
    """How ``facelab bench`` measures (its command-line options)."""

    batches: int = facelab.field(3, "timed batches per round and path", ge=1, le=10_000)
    rounds: int = facelab.field(3, "interleaved rounds; medians are reported", ge=1, le=100)
    epochs: int | None = facelab.field(
        None, "N of Table 3's 'training time for N epochs' (default: the recipe's train.epochs)",
        ge=1, le=100_000)
    train_samples: int | None = facelab.field(
        None, "training set size for the Table 3 estimate (default: the paper's, if the recipe "
        "reproduces one)", ge=1, le=10 ** 9)


@dataclass(frozen=True)
class Speed:
    """A throughput measured facelab's way and the plain Keras way (higher is faster)."""

    facelab: float
    plain: float

    @property
    def ratio(self) -> float:
        """facelab / plain: above 1, facelab's path is faster."""
        return self.facelab / self.plain

    def to_json(self) -> dict[str, float]:
        return {"facelab": self.facelab, "plain": self.plain, "ratio": self.ratio}


@dataclass(frozen=True)
class TrainSamples:
    """The training set size the Table 3 estimate uses, and where it comes from."""

    count: int | None
    source: str
    paper_row: str | None = None


@dataclass
class BenchResult:
    recipe: str
    recipe_path: str | None
    overrides: tuple[str, ...]
    device: str
    input_shape: tuple[int, ...]
    batch_size: int
    eval_batch_size: int
    batches: int
    rounds: int
    parameters: dict[str, int]
    ram_mb: float
    train: Speed
    inference: Speed          # images/s (FPS)
    pipeline: Speed
    epochs: int
    train_samples: TrainSamples
    notes: list[str] = field(default_factory=list)

    @property
    def ms_per_image(self) -> float:
        return 1000 / self.inference.facelab

    @property
    def train_seconds(self) -> float | None:
        """Table 3's training time for ``epochs`` epochs: an estimate, epochs x training set
        size / measured training images/s (facelab's path)."""
        if self.train_samples.count is None:
            return None
        return self.epochs * self.train_samples.count / self.train.facelab

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe, "recipe_path": self.recipe_path,
            "overrides": list(self.overrides), "device": self.device,
            "input_shape": list(self.input_shape), "batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size, "batches": self.batches,
            "rounds": self.rounds, "parameters": dict(self.parameters), "ram_mb": self.ram_mb,
            "train_images_per_s": self.train.to_json(),
            "inference_fps": self.inference.to_json(),
            "inference_ms_per_image": {"facelab": self.ms_per_image,
                                       "plain": 1000 / self.inference.plain},
            "pipeline_images_per_s": self.pipeline.to_json(),
            "table3": {"epochs": self.epochs, "train_samples": self.train_samples.count,
                       "train_samples_source": self.train_samples.source,
                       "paper_row": self.train_samples.paper_row,
                       "train_seconds": self.train_seconds, "train_seconds_is": "estimate",
                       "ms_per_image": self.ms_per_image, "fps": self.inference.facelab},
            "notes": list(self.notes),
        }

    def metrics(self) -> dict[str, float]:
        """MLflow metrics, named like a run's efficiency metrics (``efficiency/fps``)."""
        from facelab.results import efficiency_name

        values = {
            "total_params": self.parameters["total"],
            "trainable_params": self.parameters["trainable"], "ram_mb": self.ram_mb,
            "ms_per_image": self.ms_per_image, "fps": self.inference.facelab,
            "train_seconds": self.train_seconds,
            "train_images_per_s": self.train.facelab,
            "pipeline_images_per_s": self.pipeline.facelab,
            "plain_train_images_per_s": self.train.plain, "plain_fps": self.inference.plain,
            "plain_ms_per_image": 1000 / self.inference.plain,
            "plain_pipeline_images_per_s": self.pipeline.plain,
            "train_ratio": self.train.ratio, "inference_ratio": self.inference.ratio,
            "pipeline_ratio": self.pipeline.ratio}
        return {efficiency_name(k): float(v) for k, v in values.items() if v is not None}


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_bench_recipe(path: Path, overrides: Sequence[str], notes: list[str]):
    """The recipe as ``facelab run`` loads it; an unset ``${VAR}`` (a data folder) stands in as
    :data:`NO_DATA_PATH`, with a note, since bench reads no data."""
    import os

    from facelab.recipe import load_recipe

    placed: list[str] = []
    try:
        while True:
            try:
                return load_recipe(path, overrides)
            except FacelabError as exc:
                unset = _ENV_UNSET.search(str(exc))
                if unset is None or unset.group(1) in placed:
                    raise
                placed.append(unset.group(1))
                os.environ[unset.group(1)] = NO_DATA_PATH
                notes.append(f"{unset.group(1)} is not set: bench reads no data, so it stands "
                             f"in as {NO_DATA_PATH}")
    finally:
        for name in placed:
            os.environ.pop(name, None)


def train_samples_for(recipe, given: int | None) -> TrainSamples:
    """``--train-samples``, else the training images the recipe's paper reports (its
    ``paper.yaml``: ``timing.<row>.train_images``), else unknown."""
    if given is not None:
        return TrainSamples(given, "--train-samples")
    if recipe.schema.paper and recipe.path is not None:
        from facelab.plugins.papers import paper_diff, paper_file_beside

        paper_file = paper_file_beside(recipe.path)
        if paper_file is not None:
            paper = paper_diff.load_paper(paper_file)
            try:
                row = paper_diff.pick_row(paper, str(recipe.path), recipe.name, None,
                                          str(paper_file))
            except FacelabError:
                row = None
            images = ((paper.get("timing") or {}).get(row) or {}).get("train_images")
            if row is not None and images:
                return TrainSamples(int(images), f"the paper's, {paper_file.name} row {row}",
                                    row)
    return TrainSamples(None, "unknown without the data (pass --train-samples)")


# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------

@contextmanager
def _offline():
    """No network while building the model: a backbone's weights must already be here (a
    download fails at once, and Keras's "Downloading data from" line is not shown). Keras has
    no offline switch, so name resolution is refused for the duration."""
    def refuse(*args, **kwargs):
        raise OSError("facelab bench does not download weights")

    resolve, socket.getaddrinfo = socket.getaddrinfo, refuse
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        socket.getaddrinfo = resolve


@contextmanager
def quiet_retracing_warnings():
    """Mute TensorFlow's "triggered tf.function retracing" warnings: each model built here traces
    its own functions once (checked: no retracing in the timed rounds), which TensorFlow
    counts together and reports as if a loop retraced."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class BenchModels:
    """facelab's models and the plain copy's, and the augmentation each input pipeline applies
    (none where ``train.augment_on: model`` puts it in the training model)."""

    recipe: Any                 # as measured: ``weights: null`` where weights were missing
    training: Any
    inference: Any
    augment: list
    plain_training: Any
    plain_inference: Any
    plain_augment: list


def build_bench_models(recipe, input_shape, tasks, ctx, notes: list[str]) -> BenchModels:
    """facelab's models as ``facelab run`` builds them (``pipeline.build_models``) and a plain
    copy: the same network, freshly built, compiled with Keras's own sparse cross-entropy and
    accuracy, augmentation where the recipe puts it. Weights a backbone cannot load offline
    (ImageNet weights not downloaded yet) are replaced by ``weights: null``, with a note: speed
    does not depend on weight values."""
    import keras

    from facelab.manager import get_registry
    from facelab.model import build_model
    from facelab.pipeline import augmentations, build_models
    from facelab.recipe import apply_overrides, build_keras_object, validate_recipe

    augment = augmentations(recipe, ctx)
    try:
        with _offline():
            models = build_models(recipe, input_shape, tasks, augment=augment)
    except FacelabError as exc:
        weights = getattr(recipe.backbone.params, "weights", None)
        if weights is None or not str(exc).startswith(f"{recipe.backbone.where}.weights"):
            raise
        override = f"{recipe.backbone.where}.weights=null"
        recipe = validate_recipe(apply_overrides(recipe.to_dict(), [override]), get_registry(),
                                 where=str(recipe.path), path=recipe.path,
                                 overrides=(*recipe.overrides, override),
                                 source_text=recipe.source_text)
        notes.append(f"{recipe.backbone.where}.weights: the {weights} weights are not available "
                     "offline here, so bench uses weights: null (speed does not depend on "
                     "weight values)")
        models = build_models(recipe, input_shape, tasks, augment=augment)
    on_model = recipe.schema.train.augment_on == "model"
    plain = build_model(recipe, tuple(input_shape), tasks)
    plain_augment = augmentations(recipe, ctx)  # its own layers, with their own seed generators
    plain_training = plain
    if on_model and plain_augment:
        plain_training = keras.Sequential([keras.Input(tuple(input_shape)), *plain_augment, plain])
    train = recipe.schema.train
    extra = {}
    if train.schedule is not None:
        extra["learning_rate"] = build_keras_object("schedule", train.schedule, "train.schedule")
    plain_training.compile(
        optimizer=build_keras_object("optimizer", train.optimizer, "train.optimizer", **extra),
        loss={task: keras.losses.SparseCategoricalCrossentropy() for task in tasks},
        metrics={task: ["accuracy"] for task in tasks})
    return BenchModels(recipe, models.training, models.inference, [] if on_model else augment,
                       plain_training, plain, [] if on_model else plain_augment)


def plain_dataset(images: np.ndarray, labels: dict[str, np.ndarray], batch_size: int,
                  seed: int, augment: list | None):
    """The plain tf.data pipeline: slices, shuffle, cast, batch, augmentation, prefetch."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(
        len(images), seed=seed).map(lambda x, y: (tf.cast(x, tf.float32), y),
                                    num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    if augment:
        def apply(x, y):
            for layer in augment:
                x = layer(x, training=True)
            return x, y

        dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _iterate(dataset) -> None:
    for _ in dataset:
        pass


def _fit(model, dataset, steps: int | None = None) -> float:
    """Seconds of one training epoch, from Keras's epoch start to its end: the batches and the
    input pipeline's start, not ``fit``'s own set-up (paid once per run, not per epoch)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    clock = EpochClock()
    with warnings.catch_warnings():
        # the tf.data pipelines shuffle themselves; Keras warns that its shuffle flag is unused
        warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    return clock.seconds




# --------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------

def bench_recipe(recipe, settings: BenchSettings, *, notes: list[str] | None = None,
                 log: Callable[[str], None] = lambda message: None):
    """Measure one recipe (see the module docstring) on this machine; returns the recipe
    measured (``weights: null`` where its weights were not available) and the result."""
    from facelab.context import QuietProgress
    from facelab.data import BalancePlan
    from facelab.evaluate import device_name, inference_speed
    from facelab.inputs import make_dataset
    from facelab.model import parameter_counts, ram_mb
    from facelab.pipeline import make_context, recipe_tasks

    notes = list(notes or [])
    ctx = make_context(recipe, QuietProgress())
    tasks = recipe_tasks(recipe, ctx)
    input_shape = tuple(int(v) for v in recipe.detector.build(ctx).output_shape)
    log(f"{recipe.name}: building the model ({'x'.join(map(str, input_shape))})")
    models = build_bench_models(recipe, input_shape, tasks, ctx, notes)
    recipe, model, plain = models.recipe, models.training, models.plain_training

    train, seed = recipe.schema.train, recipe.schema.seed
    batch_size, eval_batch_size = train.batch_size, recipe.schema.evaluate.batch_size
    rng = np.random.default_rng(seed)
    count = batch_size * settings.batches
    images = rng.integers(0, 256, (count, *input_shape), dtype=np.uint8)
    labels = {name: rng.integers(0, task.num_classes, count).astype(np.int64)
              for name, task in tasks.items()}
    facelab_set = make_dataset(images, labels, BalancePlan.identity(count), batch_size,
                               shuffle=True, seed=seed, augment=models.augment)
    plain_set = plain_dataset(images, labels, batch_size, seed, models.plain_augment)
    # the input pipelines alone are cheap: time longer epochs, so that starting an epoch's
    # iterator does not dominate (a real epoch has hundreds of batches)
    rows = np.resize(np.arange(count), batch_size * max(settings.batches, PIPELINE_BATCHES))
    pipeline_labels = {name: column[rows] for name, column in labels.items()}
    facelab_pipeline = make_dataset(images[rows], pipeline_labels, BalancePlan.identity(len(rows)),
                                    batch_size, shuffle=True, seed=seed, augment=models.augment)
    plain_pipeline = plain_dataset(images[rows], pipeline_labels, batch_size, seed,
                                   models.plain_augment)
    eval_rows = np.resize(np.arange(count), eval_batch_size)
    eval_batch = images[eval_rows].astype(np.float32)

    log(f"{recipe.name}: warming up (building the training and inference graphs)")
    _fit(model, facelab_set, steps=1)
    _fit(plain, plain_set, steps=1)
    models.plain_inference.predict_on_batch(eval_batch)
    times: dict[str, list[float]] = {key: [] for key in (
        "train", "plain_train", "infer", "plain_infer", "pipeline", "plain_pipeline")}
    for round_ in range(settings.rounds):  # interleaved: a noisy machine slows every path alike
        log(f"{recipe.name}: round {round_ + 1} of {settings.rounds}")
        times["train"].append(count / _fit(model, facelab_set))
        times["plain_train"].append(count / _fit(plain, plain_set))
        times["infer"].append(inference_speed(models.inference, eval_batch,
                                              settings.batches)["fps"])
        times["plain_infer"].append(eval_batch_size * settings.batches / _seconds(
            lambda: [models.plain_inference.predict_on_batch(eval_batch)
                     for _ in range(settings.batches)]))
        times["pipeline"].append(len(rows) / _seconds(lambda: _iterate(facelab_pipeline)))
        times["plain_pipeline"].append(len(rows) / _seconds(lambda: _iterate(plain_pipeline)))
    median = {key: statistics.median(values) for key, values in times.items()}

    counts = parameter_counts(models.inference)
    return recipe, BenchResult(
        recipe=recipe.name, recipe_path=str(Path(recipe.path).resolve()) if recipe.path else None,
        overrides=tuple(recipe.overrides), device=device_name(), input_shape=input_shape,
        batch_size=batch_size, eval_batch_size=eval_batch_size, batches=settings.batches,
        rounds=settings.rounds, parameters=counts, ram_mb=ram_mb(counts["total"]),
        train=Speed(median["train"], median["plain_train"]),
        inference=Speed(median["infer"], median["plain_infer"]),
        pipeline=Speed(median["pipeline"], median["plain_pipeline"]),
        epochs=settings.epochs or train.epochs,
        train_samples=train_samples_for(recipe, settings.train_samples), notes=notes)
