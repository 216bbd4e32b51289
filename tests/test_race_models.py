"""EfficientNet backbone, CBAM and SE: Table 2's parameter counts, attention maths, save/load."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from facelab.data import Task
from facelab.errors import FacelabError
from facelab.model import build_model, parameter_counts, ram_mb
from facelab.plugins.attention.cbam import CbamParams
from facelab.plugins.attention.cbam import build as build_cbam
from facelab.plugins.attention.cbam_layers import CBAM
from facelab.plugins.attention.se_layers import SqueezeExcite
from facelab.plugins.backbones import efficientnet
from facelab.plugins.backbones.efficientnet import EfficientNetParams
from facelab.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "race-2025"
PAPER = yaml.safe_load((RECIPES / "paper.yaml").read_text())
RACE = Task("race", ("white", "black", "asian", "indian"))


@pytest.mark.parametrize("recipe, model", [("base.yaml", "base"), ("bd.yaml", "model1"),
                                           ("bd-am.yaml", "model2")])
def test_table2_parameter_counts(monkeypatch, recipe, model):
    monkeypatch.setenv("UTKFACE_DIR", "/data/UTKFace")
    resolved = load_recipe(RECIPES / recipe, ["model.backbone.weights=null"])
    counts = parameter_counts(build_model(resolved, (224, 224, 3), {"race": RACE}))
    expected = PAPER["parameters"][model]
    assert (counts["total"], counts["trainable"]) == (expected["total"], expected["trainable"])
    assert round(ram_mb(counts["total"]), 2) == expected["ram_mb"]


def cbam_reference(x, w1, w2, conv):
    """CBAM in numpy: eq. (1) then eq. (2) of the race paper, no biases."""
    def mlp(v):
        return np.maximum(v @ w1, 0) @ w2

    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    channel = sigmoid(mlp(x.mean(axis=(1, 2))) + mlp(x.max(axis=(1, 2))))
    x = x * channel[:, None, None, :]
    pooled = np.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
    k = conv.shape[0]
    padded = np.pad(pooled, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    h, w = x.shape[1:3]
    spatial = np.zeros(x.shape[:3])
    for i in range(h):
        for j in range(w):
            spatial[:, i, j] = np.einsum("bklc,klc->b", padded[:, i:i + k, j:j + k], conv[..., 0])
    return x * sigmoid(spatial)[..., None]


def test_cbam_matches_the_papers_equations():
    layer = build_cbam(CbamParams(reduction=4))
    x = np.random.default_rng(0).normal(size=(2, 6, 5, 16)).astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    w1, w2 = (keras.ops.convert_to_numpy(layer.mlp_hidden.kernel),
              keras.ops.convert_to_numpy(layer.mlp_out.kernel))
    conv = keras.ops.convert_to_numpy(layer.spatial_conv.kernel)
    assert out.shape == x.shape and w1.shape == (16, 4) and conv.shape == (7, 7, 2, 1)
    np.testing.assert_allclose(out, cbam_reference(x.astype(np.float64), w1, w2, conv),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("use_bias, expected", [
    (False, 1536 * 192 * 2 + 7 * 7 * 2),
    (True, 1536 * 192 * 2 + 7 * 7 * 2 + 192 + 1536 + 1),
])
def test_cbam_parameters(use_bias, expected):
    layer = CBAM(reduction=8, use_bias=use_bias)
    layer.build((None, 7, 7, 1536))
    assert sum(int(np.prod(w.shape)) for w in layer.weights) == expected


def test_se_gates_channels():
    layer = SqueezeExcite(reduction=4)
    x = np.random.default_rng(1).normal(size=(3, 4, 4, 8)).astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    weights = [keras.ops.convert_to_numpy(w) for w in layer.weights]
    k1, b1, k2, b2 = weights
    gates = 1 / (1 + np.exp(-(np.maximum(x.mean(axis=(1, 2)) @ k1 + b1, 0) @ k2 + b2)))
    np.testing.assert_allclose(out, x * gates[:, None, None, :], rtol=1e-5, atol=1e-6)
    assert sum(w.size for w in weights) == 8 * 2 + 2 + 2 * 8 + 8


@pytest.mark.parametrize("layer", [CBAM(reduction=4, kernel_size=3, use_bias=True, name="cbam"),
                                   SqueezeExcite(reduction=2, use_bias=False, name="se")])
def test_attention_saves_and_loads(tmp_path, layer):
    inputs = keras.Input((6, 6, 8))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 8)).astype(np.float32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = loaded.get_layer(layer.name)
    assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)


def test_imagenet_download_failure_is_one_clear_line(monkeypatch, tmp_path):
    # a closed local port: the download fails at once, with or without internet
    monkeypatch.setattr(efficientnet, "BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setattr(efficientnet, "CACHE_DIR", str(tmp_path))
    with pytest.raises(FacelabError) as info:
        efficientnet.build(EfficientNetParams(variant="b0"), (32, 32, 3))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model.backbone.weights: cannot download the ImageNet weights "
                              "efficientnetb0_notop.h5")
    assert "set model.backbone.weights to the file's path" in message


# Keras warns about a weightless nested container when loading .weights.h5; every weight is
# compared below, so the warning is noise here.
@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_from_a_path(tmp_path):
    source = efficientnet.build(EfficientNetParams(variant="b0", weights=None), (32, 32, 3))
    path = tmp_path / "b0.weights.h5"
    source.save_weights(path)
    loaded = efficientnet.build(EfficientNetParams(variant="b0", weights=str(path)), (32, 32, 3))
    for a, b in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    with pytest.raises(FacelabError,
                       match=r"model\.backbone\.weights: .*missing\.h5 is not a file"):
        efficientnet.build(EfficientNetParams(variant="b0", weights=str(tmp_path / "missing.h5")),
                           (32, 32, 3))
    with pytest.raises(FacelabError, match=r"model\.backbone\.weights: cannot load .* into "
                                           r"EfficientNetB0 \(include_top=True\)"):
        efficientnet.build(EfficientNetParams(variant="b0", weights=str(path), include_top=True),
                           (32, 32, 3))


def trainable_layers(model) -> set[str]:
    return {layer.name for layer in model.layers if layer.trainable and layer.weights}


def test_freeze_options():
    shape = (32, 32, 3)
    frozen = efficientnet.build(EfficientNetParams(variant="b0", weights=None, freeze="all"), shape)
    assert not frozen.trainable_weights
    top = efficientnet.build(EfficientNetParams(variant="b0", weights=None, freeze="all-but-top",
                                                trainable_blocks=2), shape)
    # B0's last two MBConv blocks are block7a and block6d
    assert {name.split("_")[0] for name in trainable_layers(top)} == {"block7a", "block6d", "top"}
    no_bn = efficientnet.build(EfficientNetParams(variant="b0", weights=None, freeze="all-but-top",
                                                  trainable_blocks=1, train_batchnorm=False), shape)
    assert not any(isinstance(no_bn.get_layer(n), keras.layers.BatchNormalization)
                   for n in trainable_layers(no_bn))
    assert trainable_layers(no_bn) and len(no_bn.trainable_weights) < len(top.trainable_weights)


def test_freeze_parameters_are_checked():
    with pytest.raises(ValueError, match="trainable_blocks is required"):
        EfficientNetParams(freeze="all-but-top")
    with pytest.raises(ValueError, match="only allowed with it"):
        EfficientNetParams(trainable_blocks=3)
    with pytest.raises(FacelabError,
                       match=r"trainable_blocks: 40 is more than EfficientNetB0's 16"):
        efficientnet.build(EfficientNetParams(variant="b0", weights=None, freeze="all-but-top",
                                              trainable_blocks=40), (32, 32, 3))


def test_greyscale_input_and_top():
    grey = efficientnet.build(EfficientNetParams(variant="b0", weights=None), (32, 32, 1))
    assert grey.output_shape == (None, 1, 1, 1280)
    top = efficientnet.build(EfficientNetParams(variant="b0", weights=None, include_top=True),
                             (64, 64, 3))
    probs = keras.ops.convert_to_numpy(top(np.full((1, 64, 64, 3), 128.0, np.float32)))
    assert probs.shape == (1, 1000) and abs(probs.sum() - 1) < 1e-4
