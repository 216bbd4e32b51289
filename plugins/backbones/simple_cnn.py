"""Backbone ``simple-cnn``: a small VGG-style CNN for quick experiments on CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

import facelab

if TYPE_CHECKING:
    import keras


class SimpleCnnParams(facelab.Params):
    filters: list[int] = facelab.field([16, 32, 64], "filters of each conv block (one block each)",
                                       min_length=1)
    kernel_size: int = facelab.field(3, "conv kernel side", ge=1)
    batch_norm: bool = facelab.field(True, "batch normalisation after each conv")
    bn_momentum: float = facelab.field(
        0.9, "batch-norm moving-average momentum (Keras's 0.99 lags on short CPU runs)", gt=0, lt=1)


def build(params: SimpleCnnParams, input_shape: tuple[int, int, int]) -> keras.Model:
    """A small CNN: per block, conv (same padding) + optional BN + ReLU + 2x2 max-pool.

    Inputs in 0-255 are scaled to 0-1. The output is the last block's 4-D feature map, so
    attention modules can follow.
    """
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for i, filters in enumerate(params.filters):
        x = keras.layers.Conv2D(filters, params.kernel_size, padding="same",
                                use_bias=not params.batch_norm, name=f"block{i + 1}_conv")(x)
        if params.batch_norm:
            x = keras.layers.BatchNormalization(momentum=params.bn_momentum,
                                                name=f"block{i + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i + 1}_relu")(x)
        x = keras.layers.MaxPooling2D(name=f"block{i + 1}_pool")(x)
    return keras.Model(inputs, x, name="simple_cnn")


@facelab.hookimpl
def register_backbones(register):
    register("simple-cnn", build, SimpleCnnParams)
