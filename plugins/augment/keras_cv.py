"""Augmentations from keras-cv, registered only when keras-cv is installed.

keras-cv is deprecated and pulls in tensorflow-datasets, kagglehub and keras-core, so it is an
optional extra (``pip install "facelab[keras-cv]"``). Most of its augmentations now live in Keras 3
(see ``keras_layers.py``); this module offers the ones that did not move.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import facelab
from facelab.errors import FacelabError


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


def _layers():
    module = _keras_cv()
    if module is None:
        raise FacelabError("data.augment: keras_cv is installed but fails to import; "
                           "run `python -c 'import keras_cv'` to see why")
    return module.layers


def grid_mask(params: GridMaskParams, ctx):
    """GridMask (keras_cv.layers.GridMask): hide a rotated grid of squares."""
    return _layers().GridMask(ratio_factor=(params.ratio, params.ratio),
                              rotation_factor=params.rotation_factor)


def cutout(params: CutoutParams, ctx):
    """Random cut-out (keras_cv.layers.RandomCutout): blank one random rectangle per image."""
    return _layers().RandomCutout(params.height_factor, params.width_factor)


def _installed() -> bool:
    """Whether keras_cv is installed, found without importing it (importing it imports Keras and
    TensorFlow, which listing the plugins or validating a recipe must not do)."""
    if "keras_cv" in sys.modules:  # imported already, or blocked with None
        return sys.modules["keras_cv"] is not None
    try:
        return importlib.util.find_spec("keras_cv") is not None
    except (ImportError, ValueError):
        return False


@facelab.hookimpl
def register_augmentations(register):
    if not _installed():
        return
    register("keras-cv-grid-mask", grid_mask, GridMaskParams)
    register("keras-cv-cutout", cutout, CutoutParams)
