"""Augmentations from Keras 3's preprocessing layers, applied to training batches in tf.data.

Images reach these layers as float32 in 0-255, so every layer that needs a value range gets
(0, 255).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import facelab

if TYPE_CHECKING:
    import keras

VALUE_RANGE = (0, 255)


class FlipParams(facelab.Params):
    mode: Literal["horizontal", "vertical", "horizontal_and_vertical"] = facelab.field(
        "horizontal", "which axes may flip")


class FactorParams(facelab.Params):
    factor: float = facelab.field(0.1, "maximum strength, as a fraction (Keras's factor)",
                                  ge=0, le=1)


class RandAugmentParams(facelab.Params):
    num_ops: int = facelab.field(2, "operations per image", ge=1)
    factor: float = facelab.field(0.5, "operation strength, 0-1", ge=0, le=1)


def flip(params: FlipParams, ctx) -> keras.layers.Layer:
    """Random flip (keras.layers.RandomFlip); faces are usually flipped horizontally only."""
    import keras

    return keras.layers.RandomFlip(params.mode)


def rotation(params: FactorParams, ctx) -> keras.layers.Layer:
    """Random rotation by up to ``factor`` x 360 degrees (keras.layers.RandomRotation)."""
    import keras

    return keras.layers.RandomRotation(params.factor, fill_mode="reflect")


def zoom(params: FactorParams, ctx) -> keras.layers.Layer:
    """Random zoom in or out (scale) by up to ``factor`` (keras.layers.RandomZoom)."""
    import keras

    return keras.layers.RandomZoom(params.factor, fill_mode="reflect")


def translation(params: FactorParams, ctx) -> keras.layers.Layer:
    """Random shift by up to ``factor`` of height and width (keras.layers.RandomTranslation)."""
    import keras

    return keras.layers.RandomTranslation(params.factor, params.factor, fill_mode="reflect")


def contrast(params: FactorParams, ctx) -> keras.layers.Layer:
    """Random contrast change by up to ``factor`` (keras.layers.RandomContrast)."""
    import keras

    return keras.layers.RandomContrast(params.factor, value_range=VALUE_RANGE)


def brightness(params: FactorParams, ctx) -> keras.layers.Layer:
    """Random brightness shift by up to ``factor`` of the value range (RandomBrightness)."""
    import keras

    return keras.layers.RandomBrightness(params.factor, value_range=VALUE_RANGE)


def randaugment(params: RandAugmentParams, ctx) -> keras.layers.Layer:
    """RandAugment: ``num_ops`` random operations per image (keras.layers.RandAugment)."""
    import keras

    return keras.layers.RandAugment(value_range=VALUE_RANGE, num_ops=params.num_ops,
                                    factor=params.factor)


@facelab.hookimpl
def register_augmentations(register):
    register("flip", flip, FlipParams)
    register("rotation", rotation, FactorParams)
    register("zoom", zoom, FactorParams)
    register("translation", translation, FactorParams)
    register("contrast", contrast, FactorParams)
    register("brightness", brightness, FactorParams)
    register("randaugment", randaugment, RandAugmentParams)
