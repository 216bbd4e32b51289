"""The stages, in order: load -> detect/crop -> split -> balance -> inputs -> model -> train ->
evaluate. Each stage takes what the previous one returned and returns something new."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import numpy as np

from facelab.context import BuildContext
from facelab.crops import crop_all
from facelab.data import NO_LABEL, BalancePlan, SampleTable, Task
from facelab.errors import FacelabError, did_you_mean
from facelab.evaluate import classification_metrics, group_accuracy
from facelab.inputs import batches_per_pass, host_tensor, make_dataset, position
from facelab.model import MaskedAccuracy, build_model
from facelab.recipe import Recipe, build_keras_object
from facelab.results import DataCounts, StageCounts, TaskMetrics
from facelab.split import SPLITS, SplitRequest, Splits


@dataclass
class PreparedData:
    """Everything the model needs: kept rows, their uint8 crops, the split plans, the counts."""

    table: SampleTable  # kept rows only, aligned with ``images``
    images: np.ndarray
    splits: Splits
    tasks: dict[str, Task]
    counts: DataCounts = field(default_factory=lambda: DataCounts({}))
    detector_calls: int = 0

    def labels(self, task: str) -> np.ndarray:
        return self.table.frame[task].to_numpy()

    def split_labels(self, split: str, task: str) -> np.ndarray:
        return self.labels(task)[self.splits.plans[split].base]

    def example_plan(self) -> BalancePlan:
        """The test plan, or the training plan when there is no test split (``test: 0``): the
        rows used to time inference and to give the logged model its signature."""
        test = self.splits.plans["test"]
        return test if len(test) else self.splits.plans["train"]


def make_context(recipe: Recipe, progress) -> BuildContext:
    cache = Path(recipe.schema.data.cache_dir).expanduser().absolute()
    return BuildContext(cache_dir=cache, seed=recipe.schema.seed, progress=progress)


def load_table(recipe: Recipe, ctx: BuildContext) -> SampleTable:
    """Load every source and merge them; every head's task must exist."""
    tables = {}
    for source, spec in recipe.datasets.items():
        ctx.progress.log(f"loading {spec.where} ({spec.name})")
        try:
            tables[source] = spec.build(ctx)
        except FacelabError as exc:
            raise _dataset_error(spec, exc) from None
    table = tables["default"] if list(tables) == ["default"] else SampleTable.merge(tables)
    _check_heads(recipe, table.tasks)
    used = table.frame[recipe.tasks].to_numpy()
    return SampleTable(table.frame[(used != NO_LABEL).any(axis=1)], table.tasks, table.skipped)


def _dataset_error(spec, exc: FacelabError) -> FacelabError:
    """A dataset's error with its recipe key path first. A key relative to the component
    (``FacelabError("... does not exist", where="root")``) joins the component's path
    (``data.dataset.root: ...``); a message that already starts with ``data.`` is kept."""
    message = str(exc)
    if message.startswith("data."):
        return exc
    if exc.where:
        return FacelabError(f"{spec.where}.{message}")
    return FacelabError(message, where=spec.where)


def _check_heads(recipe: Recipe, tasks: dict[str, Task]) -> None:
    """Every head's task must be one the data provides."""
    for task in recipe.tasks:
        if task not in tasks:
            raise FacelabError(f"model.heads.{task}: {did_you_mean(task, tasks, what='task')} "
                               "(tasks come from the dataset)")


def recipe_tasks(recipe: Recipe, ctx: BuildContext) -> dict[str, Task]:
    """The trained tasks, from the datasets' declared tasks when every dataset declares them
    (no data is read), else from loading the sample table."""
    specs = recipe.datasets.values()
    if all(spec.component.tasks is not None for spec in specs):
        tasks = {}
        for spec in specs:
            try:
                tasks.update(spec.component.tasks(spec.params))
            except FacelabError as exc:
                raise _dataset_error(spec, exc) from None
        _check_heads(recipe, tasks)
    else:
        tasks = load_table(recipe, ctx).tasks
    return {task: tasks[task] for task in recipe.tasks}


def prepare_data(recipe: Recipe, ctx: BuildContext) -> PreparedData:
    """load -> detect/crop (cached) -> split -> balance, with the class counts at every stage."""
    table = load_table(recipe, ctx)
    tasks = {name: table.tasks[name] for name in recipe.tasks}
    detector = recipe.detector.build(ctx)
    crops = crop_all(list(table.frame["path"]), detector, ctx.cache_dir, ctx.progress)
    kept = SampleTable(table.frame[crops.kept], table.tasks, table.skipped)
    stages = {"found": _stage_counts(table, tasks), "used": _stage_counts(kept, tasks)}
    for task in recipe.tasks:
        if not (kept.frame[task] != NO_LABEL).any():
            raise FacelabError(f"model.heads.{task}: no usable image has a {task} label")
    ctx.progress.log("splitting and balancing")
    seed = recipe.split.params.seed
    splits = recipe.split.build(ctx).split(SplitRequest(
        kept, crops.images, recipe.tasks, recipe.stratify, recipe.balance_on,
        recipe.balancer.build(ctx), seed if seed is not None else recipe.schema.seed))
    stages["train (before balancing)"] = _stage_counts(
        SampleTable(kept.frame.iloc[splits.train_rows], kept.tasks), tasks)
    for split in SPLITS:
        plan = splits.plans[split]
        stages[split] = _stage_counts(SampleTable(kept.frame.iloc[plan.base], kept.tasks), tasks,
                                      synthetic=int(plan.synthetic.sum()))
    counts = DataCounts(stages, dict(table.skipped), dict(crops.statuses))
    return PreparedData(kept, crops.images, splits, tasks, counts, crops.detector_calls)


def _stage_counts(table: SampleTable, tasks: dict[str, Task], synthetic: int | None = None
                  ) -> StageCounts:
    return StageCounts({task: table.class_counts(task) for task in tasks},
                       dict(Counter(table.frame["source"])), len(table), synthetic)


def augmentations(recipe: Recipe, ctx: BuildContext) -> list:
    """The recipe's augmentation layers, in order."""
    return [spec.build(ctx) for spec in recipe.augment]


def datasets(recipe: Recipe, data: PreparedData, ctx: BuildContext, *,
             augment: list | None = None, first_epoch: int = 0) -> dict:
    """tf.data pipelines for each split; augmentation (default: built from the recipe) on train
    only, and only with ``train.augment_on: pipeline``. The training set is endless (fit it
    with ``steps_per_epoch``), shuffled pass after pass; a run resumed after ``first_epoch``
    training epochs (of ``steps_per_epoch`` batches) continues where they stopped reading. The
    others are one pass each."""
    labels = {task: data.labels(task) for task in recipe.tasks}
    if recipe.schema.train.augment_on != "pipeline":
        augment = []  # the training model applies it (build_models)
    elif augment is None:
        augment = augmentations(recipe, ctx)
    train = recipe.schema.train
    images = host_tensor(data.images)  # one host copy, shared by the splits' pipelines
    passes, read = position(len(data.splits.plans["train"]), train.batch_size,
                            first_epoch * steps_per_epoch(recipe, data))
    out = {}
    for split in SPLITS:
        if len(data.splits.plans[split]) == 0:
            continue
        is_train = split == "train"
        out[split] = make_dataset(
            images, labels, data.splits.plans[split],
            train.batch_size if is_train else recipe.schema.evaluate.batch_size,
            shuffle=is_train, seed=recipe.schema.seed, augment=augment if is_train else None,
            first_pass=passes if is_train else 0, first_batch=read if is_train else 0,
            passes=None if is_train else 1)
    return out


def steps_per_epoch(recipe: Recipe, data: PreparedData) -> int:
    """Training batches per epoch: ``train.steps_per_epoch``, or one pass over the training
    plan."""
    train = recipe.schema.train
    return train.steps_per_epoch or batches_per_pass(len(data.splits.plans["train"]),
                                                     train.batch_size)


@dataclass(frozen=True)
class Models:
    """The network a run keeps and the model it trains.

    ``inference`` is what is evaluated, timed, logged and exported: the recipe's network, with
    no augmentation. ``training`` is compiled and fitted (and checkpointed): ``inference``
    itself, or, with ``train.augment_on: model``, the augmentation layers in front of it,
    sharing its weights.
    """

    inference: keras.Model
    training: keras.Model


def build_models(recipe: Recipe, input_shape: tuple[int, ...], tasks: dict[str, Task], *,
                 augment: list = ()) -> Models:
    """The recipe's network and its compiled training model (``augment``: the augmentation
    layers, put in front of the network with ``train.augment_on: model``). Build it in the
    run's ``tf.distribute`` strategy scope to train on several devices."""
    model = build_model(recipe, tuple(input_shape), tasks)
    spec = recipe.loss.build(tasks)
    if spec.prepare_model is not None:
        spec.prepare_model(model)
    training = model
    if augment and recipe.schema.train.augment_on == "model":
        training = augmented(model, augment)
    train = recipe.schema.train
    extra = {}
    if train.schedule is not None:
        extra["learning_rate"] = build_keras_object("schedule", train.schedule, "train.schedule")
    optimizer = build_keras_object("optimizer", train.optimizer, "train.optimizer", **extra)
    training.compile(optimizer=optimizer, loss=spec.losses, loss_weights=spec.weights,
                     metrics={task: [MaskedAccuracy(name="accuracy")] for task in recipe.tasks})
    return Models(model, training)


def compile_model(recipe: Recipe, input_shape: tuple[int, ...], tasks: dict[str, Task]
                  ) -> keras.Model:
    """The recipe's network, compiled, without augmentation."""
    return build_models(recipe, input_shape, tasks).training


def augmented(model: keras.Model, layers: list) -> keras.Model:
    """``layers`` in front of ``model``, whose weights it shares: augmentation in the model,
    on its device, Keras's placement for accelerators. Keras's random augmentation layers pass
    images through unchanged unless training, so validation sees the images as they are."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_training")


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's early stopping, optionally starting from a resumed run's state: the best
    validation loss so far and the epochs waited since it. The best weights of the epochs
    before the resumption are not held (the runner reloads them from the best checkpoint)."""

    def __init__(self, *, resumed: tuple[float | None, int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.resumed = resumed

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resumed is not None and self.resumed[0] is not None:
            self.best, self.wait = self.resumed


def train(recipe: Recipe, model: keras.Model, sets: dict, callbacks: list, *, steps: int,
          initial_epoch: int = 0, after: list = (),
          early_stopping: tuple[float | None, int] | None = None) -> tuple[dict, float]:
    """Fit from epoch ``initial_epoch`` (0-based: the epochs already done) to
    ``train.epochs``, ``steps`` batches an epoch (``steps_per_epoch``); returns (the history of
    the epochs trained now, seconds).

    ``callbacks`` run before early stopping, ``after`` after it (a checkpoint records whether
    early stopping ended training). ``early_stopping`` is a resumed run's (best validation
    loss, epochs since it), so patience carries over the interruption.
    """
    t = recipe.schema.train
    if t.early_stopping and "val" in sets:
        callbacks = [*callbacks, ResumableEarlyStopping(
            patience=t.early_stopping, restore_best_weights=True, resumed=early_stopping)]
    callbacks = [*callbacks, *after]
    start = time.perf_counter()
    # Our tf.data pipeline shuffles itself; Keras warns that its own shuffle flag is unused.
    warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
    history = model.fit(sets["train"], validation_data=sets.get("val"), epochs=t.epochs,
                        initial_epoch=initial_epoch, steps_per_epoch=steps,
                        callbacks=callbacks, verbose=0)
    return history.history, time.perf_counter() - start


def predict(model: keras.Model, dataset) -> dict[str, np.ndarray]:
    """Class probabilities per task, in plan order."""
    outputs: dict[str, list] = {}
    for x, _ in dataset:
        for task, probs in model.predict_on_batch(x).items():
            outputs.setdefault(task, []).append(np.asarray(probs))
    return {task: np.concatenate(parts) for task, parts in outputs.items()}


def evaluate_split(recipe: Recipe, data: PreparedData, split: str, probs: dict[str, np.ndarray]
                   ) -> dict[str, TaskMetrics]:
    """Per task: metrics, with accuracy per group over the task and ``evaluate.groups``."""
    frame = data.table.frame.iloc[data.splits.plans[split].base]
    results = {}
    for task in recipe.tasks:
        y_true = data.split_labels(split, task)
        y_pred = probs[task].argmax(axis=1)
        metrics = classification_metrics(y_true, y_pred, data.tasks[task])
        groups = group_accuracy(frame, y_true, y_pred, data.tasks[task],
                                recipe.schema.evaluate.groups, data.table.tasks)
        results[task] = replace(metrics, groups=groups)
    return results
