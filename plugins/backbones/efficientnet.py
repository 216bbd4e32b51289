"""Backbone ``efficientnet``: Keras's EfficientNetB0-B7, ImageNet weights, freezing options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import model_validator

import facelab
from facelab.errors import FacelabError

if TYPE_CHECKING:
    import keras

VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")
#: Where Keras downloads its application weights from (patched in tests).
BASE_URL = "https://storage.googleapis.com/keras-applications/"
#: Download cache folder; None is Keras's own (~/.keras/models).
CACHE_DIR: str | None = None


class EfficientNetParams(facelab.Params):
    variant: Literal[VARIANTS] = facelab.field("b3", "EfficientNet size: b0 (5.3M) to b7 (66M)")
    weights: str | None = facelab.field(
        "imagenet", "imagenet (downloaded once, or found in ~/.keras/models), null (random), "
        "or the path of a Keras .h5 weights file for the same variant and include_top",
        path=True)
    include_top: bool = facelab.field(
        False, "keep the 1000-class ImageNet classifier: the output is then a 1000-vector of "
        "probabilities (the race paper's base model), not a feature map")
    freeze: Literal["none", "all", "all-but-top"] = facelab.field(
        "none", "none: train everything; all: train nothing (feature extraction); all-but-top: "
        "train only the last trainable_blocks blocks, the top conv and the classifier")
    trainable_blocks: int | None = facelab.field(
        None, "with freeze: all-but-top, how many of the last MBConv blocks (block7b, block7a, "
        "...) stay trainable", ge=0)
    train_batchnorm: bool = facelab.field(
        True, "update BatchNorm layers in the trainable part; false keeps them in inference mode, "
        "as Keras's fine-tuning guide advises for small batches")

    @model_validator(mode="after")
    def _blocks_need_partial_freeze(self):
        if (self.freeze == "all-but-top") != (self.trainable_blocks is not None):
            raise ValueError("trainable_blocks is required with freeze: all-but-top and only "
                             "allowed with it")
        return self


def weights_file(variant: str, include_top: bool) -> str:
    """The ImageNet weights file Keras uses for a variant: downloaded once, then cached."""
    import keras
    from keras.src.applications.efficientnet import WEIGHTS_HASHES

    file_name = f"efficientnet{variant}{'' if include_top else '_notop'}.h5"
    file_hash = WEIGHTS_HASHES[variant][0 if include_top else 1]
    try:
        return keras.utils.get_file(file_name, BASE_URL + file_name, cache_subdir="models",
                                    file_hash=file_hash, cache_dir=CACHE_DIR)
    except Exception as exc:  # noqa: BLE001 - Keras raises a bare Exception on fetch failure
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FacelabError(
            f"model.backbone.weights: cannot download the ImageNet weights {file_name} ({reason}); "
            f"fetch {BASE_URL + file_name} on a machine with internet and set "
            f"model.backbone.weights to the file's path (or put it in ~/.keras/models/)") from None


def apply_freeze(model: keras.Model, params: EfficientNetParams) -> None:
    """Set ``trainable`` per layer from ``freeze``, ``trainable_blocks`` and ``train_batchnorm``."""
    import keras

    if params.freeze == "all":
        model.trainable = False
        return
    trainable = {layer.name for layer in model.layers}
    if params.freeze == "all-but-top":
        blocks = list(dict.fromkeys(layer.name.split("_")[0] for layer in model.layers
                                    if layer.name.startswith("block")))
        if params.trainable_blocks > len(blocks):
            raise FacelabError(f"model.backbone.trainable_blocks: {params.trainable_blocks} is "
                               f"more than EfficientNet{params.variant.upper()}'s "
                               f"{len(blocks)} blocks")
        top = set(blocks[len(blocks) - params.trainable_blocks:])
        trainable = {layer.name for layer in model.layers
                     if layer.name.split("_")[0] in top or layer.name.startswith("top_")
                     or layer.name in ("avg_pool", "predictions")}
    for layer in model.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = layer.name in trainable and (params.train_batchnorm or not is_bn)


def build(params: EfficientNetParams, input_shape: tuple[int, int, int]) -> keras.Model:
    """EfficientNet (Tan and Le 2019) B0-B7 from keras.applications, ImageNet weights by default.

    Takes float images in 0-255 (the model rescales and normalises them itself); a greyscale
    input is repeated to three channels. Without ``include_top`` the output is the last
    feature map (B3: 1536 channels), for attention and a head; with it, the 1000 ImageNet
    probabilities, as in the race paper's base model (full B3 + Dense(4)). ``weights: imagenet``
    works at any input size, also with the top.
    """
    import keras

    height, width, channels = input_shape
    if channels not in (1, 3):
        raise FacelabError(f"model.backbone: EfficientNet takes 1 or 3 channels, got {channels}")
    path = None
    if params.weights == "imagenet":
        path = weights_file(params.variant, params.include_top)
    elif params.weights is not None:
        path = Path(params.weights).expanduser()
        if not path.is_file():
            raise FacelabError(f"model.backbone.weights: {path} is not a file; expected "
                               "imagenet, null or the path of a Keras .h5 weights file")
    application = getattr(keras.applications, f"EfficientNet{params.variant.upper()}")
    # Built without weights and loaded below: Keras refuses imagenet + include_top at any input
    # size but its default, although the classifier (pooling + dense) works at every size.
    model = application(include_top=params.include_top, weights=None,
                        input_shape=(height, width, 3))
    if path is not None:
        try:
            model.load_weights(str(path))
        except Exception as exc:  # noqa: BLE001 - h5py and Keras raise many types here
            raise FacelabError(
                f"model.backbone.weights: cannot load {path} into EfficientNet"
                f"{params.variant.upper()} (include_top={params.include_top}): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    apply_freeze(model, params)
    if channels == 3:
        return model
    inputs = keras.Input(input_shape)
    rgb = keras.layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])
    return keras.Model(inputs, model(rgb), name=f"efficientnet{params.variant}_grey")


@facelab.hookimpl
def register_backbones(register):
    register("efficientnet", build, EfficientNetParams)
