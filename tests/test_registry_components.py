"""Registry-wide tests: every registered component, built-in or installed, is documented,
rejects unknown keys and builds on tiny inputs according to its kind's contract
(facelab/hookspecs.py), called the way the core calls it:

- balancers get what ``facelab.split.balance`` passes: a ``RowSubset`` over uint8 crops (which
  must not be copied whole to float) and int64 labels without ``-1``;
- splits get a ``SplitRequest`` and must keep test apart from training;
- every Keras-built component (backbone, attention, head, loss) goes into a model assembled by
  ``facelab.model.build_model`` and compiled as ``facelab.pipeline.compile_model`` does; the
  model trains one step, gradients reach every trainable weight, it saves to ``.keras`` and
  loads back (also in a fresh process) with the same predictions; a loss gives exactly zero
  gradient to a task's branch for samples unlabelled (``-1``) for that task.

A new component is picked up automatically. If it has required parameters, needs other than
default parameters to build offline on tiny inputs, or is a dataset (datasets need files), add
an entry to ``EXAMPLE_PARAMS`` (or ``DATASET_FIXTURES``) below; until then its build test fails
and says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from facelab.context import BuildContext
from facelab.data import (NO_LABEL, BalancePlan, Detection, LossSpec, RowSubset, SampleTable,
                          Task)
from facelab.errors import FacelabError
from facelab.manager import get_registry
from facelab.recipe import ComponentSpec
from facelab.registry import KINDS, Component

HERE = Path(__file__).name

#: (kind, name) -> parameters that build the component offline, fast, on tiny inputs.
EXAMPLE_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("backbone", "efficientnet"): {"variant": "b0", "weights": None},
    ("backbone", "simple-cnn"): {"filters": [4, 8]},
    ("backbone", "bknet"): {"filters": [[4], [4], [8], [8]]},
    ("backbone", "mbknet"): {"filters": [[4], [4], [8], [8]]},
    ("detector", "mtcnn"): {"size": [24, 24], "min_face_size": 12, "batch_size": 2},
    ("detector", "none"): {"size": [24, 24]},
    ("detector", "haar"): {"size": [24, 24], "min_face_size": 8},
    ("balancer", "smote"): {"k_neighbors": 2},
    ("head", "multitask"): {"units": [8, 8]},
    ("head", "classification"): {"hidden": [8], "dropout": 0.2},
    ("loss", "masked-multitask"): {"weights": {"smile": 2.0}, "l2": 0.01},
}

#: backbone name -> the (H, W, C) input it is tested on; others get DEFAULT_INPUT.
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "bknet": (48, 48, 1),
    "mbknet": (48, 48, 1),
}
DEFAULT_INPUT = (32, 32, 3)


def _utkface(tmp_path: Path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, (age, gender, race) in enumerate([(25, 0, 0), (40, 1, 1), (8, 0, 2), (70, 1, 3)]):
        image = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"{age}_{gender}_{race}_2017010{i}.jpg.chip.jpg")
    (tmp_path / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(b"no race in the name")
    return {"root": str(tmp_path)}


def _synthetic(tmp_path: Path) -> dict:
    return {"count": 12, "size": 16, "root": str(tmp_path / "synthetic")}


def _genki4k(tmp_path: Path) -> dict:
    from fixtures_multitask import write_genki4k

    return {"root": str(write_genki4k(tmp_path / "genki4k", count=6, size=24))}


def _imdb_wiki(tmp_path: Path) -> dict:
    from fixtures_multitask import write_imdb_wiki

    fixture = write_imdb_wiki(tmp_path, subset="imdb", count=8, size=24, invalid=1)
    return {"subset": "imdb", "root": str(fixture.folder)}


def _folder(tmp_path: Path) -> dict:
    from fixtures_own_data import write_photos

    return {"root": str(write_photos(tmp_path / "photos"))}


def _csv(tmp_path: Path) -> dict:
    from fixtures_own_data import write_fairface

    root = write_fairface(tmp_path / "fairface", train_per_race=1)
    return {"tables": [{"path": str(root / "fairface_label_train.csv"), "split": "train"},
                       {"path": str(root / "fairface_label_val.csv"), "split": "test"}],
            "root": str(root), "path_column": "file",
            "tasks": {"race": {"classes": ["White", "Black"], "unmapped": "drop"},
                      "gender": {"classes": ["male", "female"],
                                 "map": {"Male": "male", "Female": "female"}}}}


#: dataset name -> function(tmp_path) that writes a few files in the dataset's real layout and
#: returns the parameters that read them.
DATASET_FIXTURES: dict[str, Callable[[Path], dict]] = {
    "utkface": _utkface,
    "synthetic": _synthetic,
    "genki4k": _genki4k,
    "imdb-wiki": _imdb_wiki,
    "folder": _folder,
    "csv": _csv,
}

COMPONENTS: list[Component] = list(get_registry())
IDS = [f"{c.kind}:{c.name}" for c in COMPONENTS]


def _ctx(tmp_path: Path) -> BuildContext:
    return BuildContext(cache_dir=tmp_path / "cache", seed=0)


def example_params(component: Component, tmp_path: Path) -> dict[str, Any]:
    """The recipe values the test builds ``component`` with; fails if it needs an entry."""
    if component.kind == "dataset":
        if component.name not in DATASET_FIXTURES:
            pytest.fail(f"dataset {component.name!r} ({component.origin}) has no test data: add "
                        f"DATASET_FIXTURES[{component.name!r}] in tests/{HERE}, a function "
                        "(tmp_path) -> params that writes a few files in the dataset's layout")
        return DATASET_FIXTURES[component.name](tmp_path)
    key = (component.kind, component.name)
    if key in EXAMPLE_PARAMS:
        return dict(EXAMPLE_PARAMS[key])
    required = [n for n, f in component.params.model_fields.items() if f.is_required()]
    if required:
        pytest.fail(f"{component.kind} {component.name!r} ({component.origin}) has required "
                    f"parameters {required}: add EXAMPLE_PARAMS[{key!r}] in tests/{HERE}")
    return {}


def build(component: Component, tmp_path: Path):
    return component.validate(example_params(component, tmp_path),
                              f"example params of {component.kind} {component.name}")


# ------------------------------------------------------------------------------------------
# Documentation and schemas
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("component", COMPONENTS, ids=IDS)
def test_docstring_has_a_one_line_summary(component):
    lines = component.doc.strip().splitlines()
    assert lines, f"{component.kind} {component.name!r} has no docstring ({component.origin})"
    assert component.summary == lines[0].strip()
    assert len(lines) == 1 or not lines[1].strip(), \
        f"{component.kind} {component.name!r}: leave a blank line after the one-line summary"


@pytest.mark.parametrize("component", COMPONENTS, ids=IDS)
def test_every_parameter_has_a_description(component):
    missing = [n for n, f in component.params.model_fields.items() if not f.description]
    assert not missing, (f"{component.kind} {component.name!r}: give {missing} a one-line doc "
                         "with facelab.field(default, 'doc')")


@pytest.mark.parametrize("component", COMPONENTS, ids=IDS)
def test_unknown_keys_are_rejected(component, tmp_path):
    where = f"recipe.{component.kind}"
    values = example_params(component, tmp_path)
    fields = list(component.params.model_fields)
    if fields:
        typo = fields[0] + fields[0][-1]  # e.g. "filters" -> "filterss"
        assert typo not in fields
        with pytest.raises(FacelabError) as error:
            component.validate({**values, typo: 1}, where)
        assert str(error.value).startswith(f"{where}.{typo}: unknown key {typo!r}"), error.value
        assert f"did you mean {fields[0]!r}" in str(error.value)
    with pytest.raises(FacelabError) as error:
        component.validate({**values, "surely_not_a_key": 1}, where)
    assert str(error.value).startswith(f"{where}.surely_not_a_key: unknown key"), error.value


def test_every_kind_has_a_build_check():
    """A new hook (component kind) needs a contract check here."""
    missing = [kind for kind in KINDS if kind not in BUILD_CHECKS]
    assert not missing, (f"no contract check for component kind(s) {missing}: add "
                         f"check_<kind>(component, tmp_path) to BUILD_CHECKS in tests/{HERE}")
    stale = sorted(set(BUILD_CHECKS) - set(KINDS))
    assert not stale, f"BUILD_CHECKS in tests/{HERE} names kinds that no longer exist: {stale}"


# ------------------------------------------------------------------------------------------
# Building every component on tiny inputs, per kind
# ------------------------------------------------------------------------------------------

def check_dataset(component: Component, tmp_path: Path) -> None:
    params = build(component, tmp_path)
    table = component.factory(params, _ctx(tmp_path))
    assert isinstance(table, SampleTable)
    assert len(table) > 0
    frame = table.frame
    assert {"path", "source", *table.tasks} <= set(frame.columns)
    for name, task in table.tasks.items():
        assert task.name == name and len(task.classes) >= 2
        labels = frame[name].to_numpy()
        assert labels.dtype == np.int64
        assert ((labels == NO_LABEL) | ((labels >= 0) & (labels < task.num_classes))).all(), name
    assert all(Path(p).is_file() for p in frame["path"])
    if component.tasks is not None:
        declared = component.tasks(params)
        assert {n: t.classes for n, t in declared.items()} == \
            {n: t.classes for n, t in table.tasks.items()}, "tasks= disagrees with the table"


def check_detector(component: Component, tmp_path: Path) -> None:
    detector = component.factory(build(component, tmp_path), _ctx(tmp_path))
    height, width, channels = detector.output_shape
    assert min(height, width, channels) >= 1 and channels in (1, 3)
    assert isinstance(detector.batch_size, int) and detector.batch_size >= 1
    json.dumps(detector.cache_key())  # JSON-serialisable: the crop cache is keyed by it
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)
              for i in range(2)]
    results = detector.detect(images)
    assert len(results) == 2
    for result in results:
        assert isinstance(result, Detection) and result.status
        if result.crop is not None:
            assert result.crop.shape == tuple(detector.output_shape)
            assert result.crop.dtype == np.uint8
    assert detector.detect([]) == []


class StrictRowSubset(RowSubset):
    """A ``RowSubset`` that fails if a balancer copies the features whole to another dtype
    (``astype``, ``np.asarray(features, float)``): at the race paper's scale that is 9 GB."""

    def astype(self, dtype, *args, **kwargs):
        raise AssertionError(f"the balancer called features.astype({dtype!r}): a whole-array "
                             "copy; index rows (features[rows]) a chunk at a time instead")

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and np.dtype(dtype) != self.array.dtype:
            raise AssertionError(f"the balancer converted all features to {np.dtype(dtype)}")
        return super().__array__(dtype, copy)

    def reshape(self, n: int, *shape: int) -> StrictRowSubset:
        flat = super().reshape(n, *shape)
        return StrictRowSubset(flat.array, flat.rows)


@pytest.mark.parametrize("misuse", [lambda f: f.astype(np.float32),
                                    lambda f: np.asarray(f, np.float32),
                                    lambda f: f.reshape(len(f), -1).astype(np.float64)])
def test_strict_row_subset_catches_float_copies(misuse):
    features = StrictRowSubset(np.zeros((5, 2, 2, 3), np.uint8), np.array([0, 2, 4]))
    assert np.asarray(features).shape == (3, 2, 2, 3)  # a uint8 copy is allowed
    with pytest.raises(AssertionError, match="balancer"):
        misuse(features)


def check_balancer(component: Component, tmp_path: Path) -> None:
    balancer = component.factory(build(component, tmp_path), _ctx(tmp_path))
    # As facelab.split.balance calls it: the labelled training rows of the uint8 crops, as a
    # RowSubset (not contiguous, not starting at 0), and their int64 labels from the table.
    rng = np.random.default_rng(0)
    column = np.array([0] * 12 + [1] * 6 + [2] * 4 + [NO_LABEL] * 5, np.int64)
    rng.shuffle(column)
    images = rng.integers(0, 255, (len(column) + 7, 4, 4, 3), dtype=np.uint8)
    rows = np.sort(rng.choice(len(images), len(column), replace=False))
    table_labels = np.full(len(images), NO_LABEL, np.int64)
    table_labels[rows] = column
    labelled = rows[table_labels[rows] != NO_LABEL]
    labels = table_labels[labelled]
    features = StrictRowSubset(images, labelled)
    saved = labels.copy()
    plan = balancer.plan(features, labels, 0)
    assert (labels == saved).all(), "the balancer changed the labels it was given"
    assert isinstance(plan, BalancePlan) and len(plan) > 0
    assert len(plan.base) == len(plan.neighbour) == len(plan.step)
    for rows_ in (plan.base, plan.neighbour):
        assert np.issubdtype(rows_.dtype, np.integer), rows_.dtype
        assert ((rows_ >= 0) & (rows_ < len(labels))).all(), "plan rows index the labels given"
    assert set(labels[plan.base]) <= set(labels)
    assert (labels[plan.neighbour] == labels[plan.base]).all(), "interpolate within a class"
    synthetic = plan.synthetic
    assert (labels[plan.neighbour[synthetic]] == labels[plan.base[synthetic]]).all()
    assert ((plan.step >= 0) & (plan.step <= 1)).all()
    samples = plan.materialize(np.asarray(features))
    assert samples.shape == (len(plan), 4, 4, 3) and samples.dtype == np.float32
    assert (samples >= 0).all() and (samples <= 255).all()
    # the same seed, the same plan
    again = balancer.plan(StrictRowSubset(images, labelled), labels, 0)
    for a, b in ((plan.base, again.base), (plan.neighbour, again.neighbour),
                 (plan.step, again.step)):
        assert np.array_equal(a, b), "a balancer must be deterministic for a given seed"


def check_augmentation(component: Component, tmp_path: Path) -> None:
    import tensorflow as tf

    layer = component.factory(build(component, tmp_path), _ctx(tmp_path))
    batch = np.random.default_rng(0).uniform(0, 255, (2, 24, 24, 3)).astype(np.float32)
    # as the input pipeline applies it: in tf.data, on float32 0-255 training batches
    dataset = tf.data.Dataset.from_tensors(batch).map(lambda x: layer(x, training=True))
    out = next(iter(dataset)).numpy()
    assert out.shape == batch.shape and out.dtype == np.float32
    assert np.isfinite(out).all()


def check_backbone(component: Component, tmp_path: Path) -> None:
    import keras

    shape = INPUT_SHAPES.get(component.name, DEFAULT_INPUT)
    model = component.factory(build(component, tmp_path), shape)
    assert isinstance(model, keras.Model)
    features = model.predict(np.zeros((2, *shape), np.float32), verbose=0)
    assert features.ndim in (2, 4) and features.shape[0] == 2
    assert np.isfinite(features).all()


def check_attention(component: Component, tmp_path: Path) -> None:
    layer = component.factory(build(component, tmp_path))
    if layer is None:  # identity
        return
    maps = np.random.default_rng(0).normal(size=(2, 6, 6, 16)).astype(np.float32)
    out = np.asarray(layer(maps))
    assert out.shape == maps.shape and np.isfinite(out).all()


def check_head(component: Component, tmp_path: Path) -> None:
    import keras

    task = Task("race", ("white", "black", "asian"))
    params = build(component, tmp_path)
    for shape in ((6, 6, 16), (16,)):
        inputs = keras.Input(shape)
        model = keras.Model(inputs, component.factory(params, task)(inputs))
        features = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
        probs = np.asarray(model.predict(features, verbose=0))
        assert probs.shape == (2, 3), shape
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()


def check_loss(component: Component, tmp_path: Path) -> None:
    import keras

    tasks = {"smile": Task("smile", ("non-smile", "smile")),
             "age": Task("age", ("young", "adult", "old"))}
    spec = component.factory(build(component, tmp_path), tasks)
    assert isinstance(spec, LossSpec)
    assert set(spec.losses) == set(tasks)
    if spec.weights is not None:
        assert set(spec.weights) <= set(tasks)
    y_pred = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], np.float32)
    other = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], np.float32)  # only the unlabelled row
    y_true = np.array([1, NO_LABEL])
    loss = spec.losses["age"]
    value = float(loss(y_true, y_pred))
    assert np.isfinite(value) and value > 0
    assert np.isclose(value, float(loss(y_true, other))), "a -1 label must add zero loss"
    assert float(loss(np.array([NO_LABEL, NO_LABEL]), y_pred)) == 0.0
    if spec.prepare_model is not None:
        inputs = keras.Input((4,))
        outputs = {name: keras.layers.Dense(task.num_classes, activation="softmax",
                                            name=f"{name}_probs")(inputs)
                   for name, task in tasks.items()}
        spec.prepare_model(keras.Model(inputs, outputs))


class RecordingBalancer:
    """Checks what a split passes the balancer and adds one synthetic row per class."""

    def __init__(self) -> None:
        self.calls = 0

    def plan(self, features, labels, seed):
        self.calls += 1
        assert isinstance(features, RowSubset), type(features)
        assert features.dtype == np.uint8 and len(features) == len(labels)
        labels = np.asarray(labels)
        assert (labels != NO_LABEL).all(), "a balancer never sees unlabelled rows"
        base, neighbour = [np.arange(len(labels))], [np.arange(len(labels))]
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            base.append(members[:1])
            neighbour.append(members[-1:])
        extra = sum(len(b) for b in base[1:])
        return BalancePlan(np.concatenate(base), np.concatenate(neighbour),
                           np.concatenate([np.zeros(len(labels)), np.full(extra, 0.5)]))


def check_split(component: Component, tmp_path: Path) -> None:
    import pandas as pd

    from facelab.split import SPLITS, SplitRequest, Splits

    rng = np.random.default_rng(0)
    n_a, n_b = 40, 20
    race = np.concatenate([rng.permutation(np.arange(n_a) % 3),
                           np.full(n_b, NO_LABEL)])  # source b labels gender only
    gender = np.concatenate([np.full(n_a, NO_LABEL), rng.permutation(np.arange(n_b) % 2)])
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(n_a + n_b)],
                          "source": ["a"] * n_a + ["b"] * n_b, "race": race, "gender": gender})
    tasks = {"race": Task("race", ("white", "black", "asian")),
             "gender": Task("gender", ("male", "female"))}
    table = SampleTable(frame, tasks)
    images = rng.integers(0, 255, (len(table), 4, 4, 3), dtype=np.uint8)
    splitter = component.factory(build(component, tmp_path), _ctx(tmp_path))
    balancer = RecordingBalancer()

    def request() -> SplitRequest:
        return SplitRequest(table, images, ["race", "gender"], "race", "race", balancer, 0)

    splits = splitter.split(request())
    assert balancer.calls >= 1, "the recipe's balancer must balance the training rows"
    assert isinstance(splits, Splits)
    assert set(splits.plans) == set(SPLITS)
    n = len(table)
    for name, plan in splits.plans.items():
        assert isinstance(plan, BalancePlan), name
        for rows in (plan.base, plan.neighbour):
            assert ((rows >= 0) & (rows < n)).all(), name
        synthetic = plan.synthetic
        assert (race[plan.neighbour[synthetic]] == race[plan.base[synthetic]]).all(), name
    train, test = splits.plans["train"], splits.plans["test"]
    assert len(train) > 0 and len(test) > 0
    assert not test.synthetic.any(), "test holds no synthetic samples"
    train_rows = np.asarray(splits.train_rows)
    assert set(np.concatenate([train.base, train.neighbour])) <= set(train_rows)
    assert not set(test.base) & set(train_rows), "test rows leaked into training"
    assert not set(test.base) & set(splits.plans["val"].base), "test rows leaked into validation"
    assert {"a", "b"} <= set(frame["source"].to_numpy()[test.base]), "every source is tested"
    again = splitter.split(request())
    for name in SPLITS:
        assert np.array_equal(splits.plans[name].base, again.plans[name].base), \
            f"{name}: a split must be deterministic for a given seed"


BUILD_CHECKS: dict[str, Callable[[Component, Path], None]] = {
    "dataset": check_dataset,
    "detector": check_detector,
    "split": check_split,
    "balancer": check_balancer,
    "augmentation": check_augmentation,
    "backbone": check_backbone,
    "attention": check_attention,
    "head": check_head,
    "loss": check_loss,
}


@pytest.mark.parametrize("component", COMPONENTS, ids=IDS)
def test_builds_on_tiny_inputs(component, tmp_path):
    check = BUILD_CHECKS.get(component.kind)
    if check is None:
        pytest.fail(f"component kind {component.kind!r} has no contract check: add "
                    f"check_{component.kind}(component, tmp_path) to BUILD_CHECKS in tests/{HERE}")
    check(component, tmp_path)


def test_example_entries_name_registered_components():
    """Stale entries (a renamed or removed component) are errors too."""
    registered = {(c.kind, c.name) for c in COMPONENTS}
    assert set(EXAMPLE_PARAMS) <= registered, set(EXAMPLE_PARAMS) - registered
    assert EAGER_TRAIN_STEP <= registered, EAGER_TRAIN_STEP - registered
    assert {(kind, name) for kind, (name, _) in MODEL_DEFAULTS.items()} <= registered
    datasets = {c.name for c in COMPONENTS if c.kind == "dataset"}
    assert set(DATASET_FIXTURES) <= datasets, set(DATASET_FIXTURES) - datasets
    assert set(INPUT_SHAPES) <= {c.name for c in COMPONENTS if c.kind == "backbone"}


# ------------------------------------------------------------------------------------------
# Keras components in a model: train, gradients, save and load
# ------------------------------------------------------------------------------------------

#: The kinds whose components end up in the Keras model, and the component each model uses
#: for the kinds not under test (with its parameters).
MODEL_KINDS = ("backbone", "attention", "head", "loss")
MODEL_DEFAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "backbone": ("simple-cnn", {"filters": [4, 8]}),
    "attention": ("none", {}),
    "head": ("classification", {}),
    "loss": ("cross-entropy", {}),
}
#: Two tasks, so heads are built per task and losses mask per task.
MODEL_TASKS = {"smile": Task("smile", ("non-smile", "smile")),
               "age": Task("age", ("young", "adult", "old"))}
MODEL_COMPONENTS = [c for c in COMPONENTS if c.kind in MODEL_KINDS]
#: Components whose training step runs eagerly (a GradientTape and ``optimizer.apply``) instead
#: of through ``train_on_batch``: tracing EfficientNet's train step takes 30 s on 2 CPU cores.
EAGER_TRAIN_STEP = {("backbone", "efficientnet")}
MODEL_IDS = [f"{c.kind}:{c.name}" for c in MODEL_COMPONENTS]
BATCH = 4


def _spec(kind: str, component: Component | None, tmp_path: Path) -> ComponentSpec:
    """The recipe's ComponentSpec for ``kind``: ``component`` in its slot, else a default."""
    if component is not None and component.kind == kind:
        return ComponentSpec(kind, component, build(component, tmp_path))
    name, values = MODEL_DEFAULTS[kind]
    default = get_registry().get(kind, name)
    return ComponentSpec(kind, default, default.validate(values, f"default {kind}"))


def compiled_model(component: Component | None, tmp_path: Path):
    """(model, input shape): ``component`` in its slot (None: all defaults), the defaults
    elsewhere, assembled by ``build_model`` and compiled as ``compile_model`` does."""
    import keras

    from facelab.model import MaskedAccuracy, build_model

    keras.utils.set_random_seed(0)
    specs = {kind: _spec(kind, component, tmp_path) for kind in MODEL_KINDS}
    backbone = specs["backbone"]
    shape = INPUT_SHAPES.get(backbone.name, DEFAULT_INPUT)
    recipe = SimpleNamespace(name="contract test", backbone=backbone,
                             attention=specs["attention"], tasks=list(MODEL_TASKS),
                             heads={task: specs["head"] for task in MODEL_TASKS})
    model = build_model(recipe, shape, MODEL_TASKS)
    spec = specs["loss"].build(MODEL_TASKS)
    if spec.prepare_model is not None:
        spec.prepare_model(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=spec.losses,
                  loss_weights=spec.weights,
                  metrics={task: [MaskedAccuracy(name="accuracy")] for task in MODEL_TASKS})
    return model, shape


def _batch(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """float32 images in 0-255, as the input pipeline gives them."""
    return np.random.default_rng(seed).uniform(0, 255, (BATCH, *shape)).astype(np.float32)


#: int64 labels as the input pipeline gives them; one age label missing.
LABELS = {"smile": np.array([0, 1, 0, 1], np.int64),
          "age": np.array([0, 1, 2, NO_LABEL], np.int64)}


def _gradients(model, x, y, training: bool = True) -> tuple[list, list]:
    """Gradients of the compiled loss (and the model's added losses, e.g. L2) for every
    trainable variable, as ``fit`` computes them; and those of the added losses alone."""
    import tensorflow as tf
    from keras import ops

    with tf.GradientTape(persistent=True) as tape:
        y_pred = model(x, training=training)
        total = model.compute_loss(x=x, y=y, y_pred=y_pred, training=training)
        added = ops.sum([ops.cast(loss, "float32") for loss in model.losses]) \
            if model.losses else None
    variables = model.trainable_variables
    grads = [np.asarray(g) if g is not None else None for g in tape.gradient(total, variables)]
    extra = [np.zeros(v.shape, np.float32) for v in variables] if added is None else \
        [np.asarray(g) if g is not None else np.zeros(v.shape, np.float32)
         for g, v in zip(tape.gradient(added, variables), variables)]
    return grads, extra


@pytest.mark.parametrize("component", MODEL_COMPONENTS, ids=MODEL_IDS)
def test_model_trains_saves_and_loads(component, tmp_path):
    """One training step (``train_on_batch``, the graph ``fit`` runs), then ``model.save`` and
    ``keras.models.load_model`` (no custom_objects) give the same predictions, the same compiled
    losses and weights, and the optimizer state."""
    import keras

    model, shape = compiled_model(component, tmp_path)
    x = _batch(shape)
    if (component.kind, component.name) in EAGER_TRAIN_STEP:
        grads, _ = _gradients(model, x, LABELS)
        model.optimizer.apply(grads, model.trainable_variables)
    else:
        logs = model.train_on_batch(x, LABELS, return_dict=True)
        assert np.isfinite(logs["loss"]), logs
    before = model(x, training=False)
    assert set(before) == set(MODEL_TASKS)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = loaded(x, training=False)
    for task in MODEL_TASKS:
        np.testing.assert_allclose(np.asarray(after[task]), np.asarray(before[task]),
                                   rtol=1e-5, atol=1e-6,
                                   err_msg=f"{task}: predictions changed by save/load")
    # the compiled losses come back, of the same class and configuration, computing the same
    # (the L2 penalty masked-multitask sets on variables is not saved: training state only)
    weights = "loss_weights"
    assert loaded.get_compile_config()[weights] == model.get_compile_config()[weights]
    for task in MODEL_TASKS:
        original, reloaded = model.loss[task], loaded.loss[task]
        assert type(reloaded) is type(original)
        assert reloaded.get_config() == original.get_config()
        assert np.isclose(float(reloaded(LABELS[task], after[task])),
                          float(original(LABELS[task], before[task])), rtol=1e-5)
    assert int(loaded.optimizer.iterations) == 1, "the optimizer state is saved"


@pytest.mark.parametrize("component", MODEL_COMPONENTS, ids=MODEL_IDS)
def test_gradients_reach_every_trainable_weight(component, tmp_path):
    model, shape = compiled_model(component, tmp_path)
    assert model.trainable_variables
    grads, extra = _gradients(model, _batch(shape), LABELS)
    dead = [v.path for v, g, r in zip(model.trainable_variables, grads, extra)
            if g is None or not np.any(g - r)]
    assert not dead, f"no gradient from the loss reaches {dead}"


def _branch(model, x, task: str) -> list[int]:
    """Indices of the trainable variables only ``task``'s output depends on (its head)."""
    import tensorflow as tf
    from keras import ops

    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        out = model(x, training=False)
        own = ops.sum(out[task])
        others = ops.sum([ops.sum(out[t]) for t in out if t != task])
    g_own, g_other = tape.gradient(own, variables), tape.gradient(others, variables)
    return [i for i, (a, b) in enumerate(zip(g_own, g_other)) if a is not None and b is None]


@pytest.mark.parametrize("component", [c for c in MODEL_COMPONENTS if c.kind == "loss"],
                         ids=[i for i, c in zip(MODEL_IDS, MODEL_COMPONENTS) if c.kind == "loss"])
def test_unlabelled_samples_give_zero_gradient_to_their_task(component, tmp_path):
    model, shape = compiled_model(component, tmp_path)
    x = _batch(shape)
    age_head = _branch(model, x, "age")
    smile_head = _branch(model, x, "smile")
    assert age_head and smile_head, "each task has a branch of its own"

    def task_grads(y, inputs=x):
        # inference mode: batch norm and dropout would otherwise mix or drop samples
        grads, extra = _gradients(model, inputs, y, training=False)
        return [grads[i] - extra[i] for i in age_head], [grads[i] - extra[i] for i in smile_head]

    # no sample labelled for age: exactly zero gradient to the age branch
    age, smile = task_grads({"smile": LABELS["smile"], "age": np.full(BATCH, NO_LABEL, np.int64)})
    assert all(not g.any() for g in age), "unlabelled samples moved the age head"
    assert all(g.any() for g in smile), "labelled samples must move the smile head"
    # labelled samples do move it; unlabelled ones, whatever their image, add nothing
    y = {"smile": LABELS["smile"], "age": np.array([1, NO_LABEL, 2, NO_LABEL], np.int64)}
    age, _ = task_grads(y)
    assert all(g.any() for g in age), "labelled samples must move the age head"
    other = x.copy()
    other[[1, 3]] = _batch(shape, seed=1)[[1, 3]]
    age_other, _ = task_grads(y, other)
    for g, h in zip(age, age_other):
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-7,
                                   err_msg="an unlabelled sample changed the age gradient")


def _custom_classes(model) -> set[type]:
    """Classes in ``model`` (layers, nested models' layers, losses) that are not Keras's own."""
    import keras

    classes, stack = set(), [model]
    while stack:
        layer = stack.pop()
        classes.add(type(layer))
        stack.extend(getattr(layer, "layers", []))
    classes |= {type(loss) for loss in keras.tree.flatten(model.loss)}
    return {c for c in classes if not c.__module__.startswith("keras")}


def test_saved_models_load_in_a_fresh_process(tmp_path):
    """``keras.models.load_model`` in a new interpreter, without ``custom_objects``, finds every
    class of facelab's and the plugins' once ``facelab.manager.import_keras_modules()`` ran
    (plugins keep their Keras classes in modules that loading the plugins does not import)."""
    from facelab.model import MaskedAccuracy

    covered: set[type] = {type(None)}
    saved = {}
    for component in [None, *MODEL_COMPONENTS]:
        if component is not None and component.name == MODEL_DEFAULTS[component.kind][0]:
            continue  # already in the default model
        model, shape = compiled_model(component, tmp_path)
        custom = _custom_classes(model) | {MaskedAccuracy}
        if custom <= covered:
            continue
        covered |= custom
        x = _batch(shape)
        name = "default" if component is None else f"{component.kind}-{component.name}"
        path = tmp_path / f"{name}.keras"
        model.save(path)
        np.savez(tmp_path / f"{name}.npz", x=x, **{
            f"y_{task}": np.asarray(probs) for task, probs in model.predict_on_batch(x).items()})
        saved[name] = sorted(f"{c.__module__}.{c.__qualname__}" for c in custom)
    code = textwrap.dedent("""
        import sys
        from pathlib import Path

        import numpy as np

        import facelab.manager

        facelab.manager.import_keras_modules()
        import keras

        for name in sys.argv[2:]:
            model = keras.models.load_model(Path(sys.argv[1]) / f"{name}.keras")
            data = np.load(Path(sys.argv[1]) / f"{name}.npz")
            got = model.predict_on_batch(data["x"])
            for task, probs in got.items():
                np.testing.assert_allclose(probs, data[f"y_{task}"], rtol=1e-5, atol=1e-6)
            print("loaded", name)
    """)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path), *saved],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{saved}\n{result.stderr[-3000:]}"
    assert result.stdout.split() == [w for name in saved for w in ("loaded", name)], result.stdout
