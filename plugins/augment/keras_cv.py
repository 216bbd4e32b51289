"""Augmentations from keras-cv, registered only when keras-cv is installed.

keras-cv is deprecated and pulls in tensorflow-datasets, kagglehub and keras-core, so it is an
optional extra (``pip install "facelab[keras-cv]"``). Most of its augmentations now live in Keras 3
(see ``keras_layers.py``); this module offers the ones that did not move.
"""

from __future__ import annotations

import importlib

import facelab


class GridMaskParams(facelab.Params):
    ratio: float = facelab.field(0.6, "fraction of each grid cell masked", gt=0, lt=1)
    rotation_factor: float = facelab.field(0.15, "random grid rotation, fraction of 360 degrees",
                                           ge=0, le=1)


class CutoutParams(facelab.Params):
    height_factor: float = facelab.field(0.3, "cut-out height, fraction of the image", gt=0, le=1)
    width_factor: float = facelab.field(0.3, "cut-out width, fraction of the image", gt=0, le=1)


def _keras_cv():
    """The keras_cv module, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module("keras_cv")
    except Exception:  # an optional extra that is absent or broken must not break facelab
        return None


def grid_mask(params: GridMaskParams, ctx):
    """GridMask (keras_cv.layers.GridMask): hide a rotated grid of squares."""
    return _keras_cv().layers.GridMask(ratio_factor=(params.ratio, params.ratio),
                                       rotation_factor=params.rotation_factor)


def cutout(params: CutoutParams, ctx):
    """Random cut-out (keras_cv.layers.RandomCutout): blank one random rectangle per image."""
    return _keras_cv().layers.RandomCutout(params.height_factor, params.width_factor)


@facelab.hookimpl
def register_augmentations(register):
    if _keras_cv() is None:
        return
    register("keras-cv-grid-mask", grid_mask, GridMaskParams)
    register("keras-cv-cutout", cutout, CutoutParams)
