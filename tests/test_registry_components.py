"""Registry-wide tests: every registered component, built-in or installed, is documented,
rejects unknown keys and builds on tiny inputs according to its kind's contract
(facelab/hookspecs.py).

A new component is picked up automatically. If it has required parameters, needs other than
default parameters to build offline on tiny inputs, or is a dataset (datasets need files), add
an entry to ``EXAMPLE_PARAMS`` (or ``DATASET_FIXTURES``) below; until then its build test fails
and says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facelab.context import BuildContext
from facelab.data import NO_LABEL, BalancePlan, Detection, LossSpec, SampleTable, Task
from facelab.errors import FacelabError
from facelab.manager import get_registry
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


#: dataset name -> function(tmp_path) that writes a few files in the dataset's real layout and
#: returns the parameters that read them.
DATASET_FIXTURES: dict[str, Callable[[Path], dict]] = {
    "utkface": _utkface,
    "synthetic": _synthetic,
    "genki4k": _genki4k,
    "imdb-wiki": _imdb_wiki,
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
    assert set(BUILD_CHECKS) == set(KINDS)


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


def check_balancer(component: Component, tmp_path: Path) -> None:
    balancer = component.factory(build(component, tmp_path), _ctx(tmp_path))
    labels = np.array([0] * 12 + [1] * 6 + [2] * 4)
    features = np.random.default_rng(0).integers(0, 255, (len(labels), 4, 4, 3), dtype=np.uint8)
    plan = balancer.plan(features.reshape(len(labels), -1), labels, 0)
    assert isinstance(plan, BalancePlan) and len(plan) > 0
    for rows in (plan.base, plan.neighbour):
        assert ((rows >= 0) & (rows < len(labels))).all()
    assert set(labels[plan.base]) <= set(labels)
    assert (labels[plan.neighbour] == labels[plan.base]).all(), "interpolate within a class"
    assert ((plan.step >= 0) & (plan.step <= 1)).all()
    assert plan.materialize(features).shape == (len(plan), 4, 4, 3)


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


BUILD_CHECKS: dict[str, Callable[[Component, Path], None]] = {
    "dataset": check_dataset,
    "detector": check_detector,
    "balancer": check_balancer,
    "augmentation": check_augmentation,
    "backbone": check_backbone,
    "attention": check_attention,
    "head": check_head,
    "loss": check_loss,
}


@pytest.mark.parametrize("component", COMPONENTS, ids=IDS)
def test_builds_on_tiny_inputs(component, tmp_path):
    BUILD_CHECKS[component.kind](component, tmp_path)


def test_example_entries_name_registered_components():
    """Stale entries (a renamed or removed component) are errors too."""
    registered = {(c.kind, c.name) for c in COMPONENTS}
    assert set(EXAMPLE_PARAMS) <= registered, set(EXAMPLE_PARAMS) - registered
    datasets = {c.name for c in COMPONENTS if c.kind == "dataset"}
    assert set(DATASET_FIXTURES) <= datasets, set(DATASET_FIXTURES) - datasets
    assert set(INPUT_SHAPES) <= {c.name for c in COMPONENTS if c.kind == "backbone"}
