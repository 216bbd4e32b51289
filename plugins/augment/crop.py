"""Augmentation ``random-crop``: a random square-ish window, resized back to the input size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import facelab

if TYPE_CHECKING:
    import keras


class RandomCropParams(facelab.Params):
    scale: float = facelab.field(
        0.9, "crop side as a fraction of the image side (0.9: a 43x43 window of a 48x48 face)",
        gt=0, le=1)


def build(params: RandomCropParams, ctx) -> keras.layers.Layer:
    """Random crop of ``scale`` x the side at a random place, resized back (training only).

    Built as RandomTranslation (up to (1 - scale) / 2 of the side) then a fixed RandomZoom in to
    ``scale`` about the centre: the window's centre is uniform over every position that keeps it
    inside the image, per image. keras.layers.RandomCrop would need the size at construction
    (the factory does not know it) and draws one window per batch, not per image.
    """
    import keras

    shift = (1 - params.scale) / 2
    zoom = -(1 - params.scale)  # Keras: negative height_factor zooms in
    return keras.Sequential([
        keras.layers.RandomTranslation(shift, shift, fill_mode="reflect"),
        keras.layers.RandomZoom((zoom, zoom), fill_mode="reflect"),
    ], name="random_crop")


@facelab.hookimpl
def register_augmentations(register):
    register("random-crop", build, RandomCropParams)
