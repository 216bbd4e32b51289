"""BKNet / MBKNet backbones, the multitask head and random-crop: Table 3's counts and shapes."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from facelab.data import Task
from facelab.errors import FacelabError
from facelab.manager import get_registry

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SMILE = Task("smile", ("non-smile", "smile"))
AGE = Task("age", ("0-15", "16-25", "26-35", "36-45", "46-60", "61-100"))
GENDER = Task("gender", ("male", "female"))


def component(kind: str, name: str, **values):
    entry = get_registry().get(kind, name)
    return entry.factory, entry.validate(values, f"test.{kind}")


def assemble(backbone: str, tasks: list[Task], shape=(48, 48, 1), head=None, **backbone_params):
    """As the core does: keras.Input -> backbone model -> one head per task -> dict outputs."""
    b_factory, b_params = component("backbone", backbone, **backbone_params)
    h_factory, h_params = component("head", "multitask", **(head or {}))
    inputs = keras.Input(shape)
    features = b_factory(b_params, shape)(inputs)
    return keras.Model(inputs, {t.name: h_factory(h_params, t)(features) for t in tasks})


@pytest.mark.parametrize("backbone, tasks, expected", [
    ("bknet", [SMILE], 2_418_146),                # config A (smile)
    ("bknet", [SMILE, AGE, GENDER], 3_731_946),   # config B
    ("mbknet", [SMILE, AGE, GENDER], 3_953_130),  # config C
])
def test_table3_parameter_counts(backbone, tasks, expected):
    model = assemble(backbone, tasks)
    assert model.count_params() == expected
    assert not model.non_trainable_weights


def test_feature_sizes_and_paper_initialisation():
    bknet_f, params = component("backbone", "bknet", init="gaussian")
    bknet = bknet_f(params, (48, 48, 1))
    assert bknet.output_shape == (None, 2304)  # 3 x 3 x 256
    assert isinstance(bknet.layers[1], keras.layers.Rescaling)
    assert bknet.layers[1].scale == pytest.approx(1 / 255)
    mbknet_f, params = component("backbone", "mbknet")
    assert mbknet_f(params, (48, 48, 1)).output_shape == (None, 2304 + 288)
    kernel = np.asarray(bknet.get_layer("group4_conv3").kernel)
    assert kernel.std() == pytest.approx(0.1, rel=0.02) and abs(kernel.mean()) < 0.002
    _, glorot = component("backbone", "bknet")  # the default
    kernel = np.asarray(bknet_f(glorot, (48, 48, 1)).get_layer("group4_conv3").kernel)
    assert kernel.std() < 0.03  # Glorot uniform: sqrt(2 / (2304 + 2304))


def test_mbknet_pools_the_first_group_to_any_last_grid():
    for shape, grid in (((64, 64, 3), 4), ((50, 50, 1), 3), ((16, 16, 1), 1)):
        factory, params = component("backbone", "mbknet", filters=[[2], [2], [2], [3]])
        model = factory(params, shape)
        assert model.output_shape == (None, grid * grid * (3 + 2)), shape
        out = model(np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32"))
        assert np.isfinite(np.asarray(out)).all()
    with pytest.raises(FacelabError, match="too small for 4 2x2 max-pools"):
        factory(params, (8, 8, 1))


def test_the_first_group_really_reaches_the_features():
    """Config C's extra 288 features are the first group's output max-pooled 8x8 (24 -> 3)."""
    factory, params = component("backbone", "mbknet")
    model = factory(params, (48, 48, 1))
    x = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 1)).astype("float32")
    group1 = keras.Model(model.input, model.get_layer("group1_pool").output)(x)
    expected = np.asarray(group1).reshape(2, 3, 8, 3, 8, 32).max(axis=(2, 4)).reshape(2, -1)
    np.testing.assert_allclose(np.asarray(model(x))[:, :288], expected, rtol=1e-6)


def test_head_layers_dropout_and_batch_norm_option():
    model = assemble("bknet", [SMILE, GENDER], head={"batch_norm": True})
    names = [layer.name for layer in model.layers]
    for task in ("smile", "gender"):
        for name in ("dropout1", "fc1", "bn1", "relu1", "dropout2", "fc2", "bn2", "relu2",
                     "dropout", "probs"):
            assert f"{task}_{name}" in names
    # BN adds gamma/beta (trainable) and mean/variance (not) per hidden layer: 2 x 4 x 256 a head
    assert model.count_params() == 2_418_146 + 656_386 + 2 * 2 * 4 * 256  # + a gender branch
    assert sum(np.prod(w.shape) for w in model.non_trainable_weights) == 2 * 2 * 2 * 256
    assert model.get_layer("smile_dropout1").rate == 0.5
    probs = model(np.zeros((3, 48, 48, 1), "float32"))
    np.testing.assert_allclose(np.asarray(probs["smile"]).sum(axis=1), 1.0, rtol=1e-5)


def test_random_crop_takes_a_window_per_image_and_only_in_training():
    factory, params = component("augmentation", "random-crop", scale=0.5)
    layer = factory(params, None)
    # every pixel holds its column index, so a row of the output shows which columns it came from
    x = np.tile(np.arange(48, dtype="float32")[None, None, :, None], (16, 48, 1, 1))
    rows = np.asarray(layer(x, training=True))[:, 24, :, 0]
    span = rows.max(axis=1) - rows.min(axis=1)
    np.testing.assert_allclose(span, 23.5, atol=0.6)  # half the side, resized back to 48
    assert (rows.min(axis=1) >= -0.01).all() and (rows.max(axis=1) <= 47.01).all()
    assert (np.diff(rows, axis=1) >= -1e-3).all()  # no reflected (out-of-image) content
    assert len(np.unique(rows.min(axis=1).round(2))) > 8  # the window moves per image
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    with pytest.raises(FacelabError, match="scale"):
        component("augmentation", "random-crop", scale=1.5)
