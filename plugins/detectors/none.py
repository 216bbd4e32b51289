"""Detector ``none``: for images that are already face crops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import facelab
from facelab.data import Detection
from facelab.images import ColourMode, channels, resize, to_colour


class NoDetectorParams(facelab.Params):
    size: tuple[int, int] = facelab.field((64, 64), "output (height, width) in pixels")
    colour: ColourMode = facelab.field("rgb", "output colour mode: rgb or grey")


class WholeImage:
    """Resizes each whole image to the output size; never drops one."""

    batch_size = 256

    def __init__(self, params: NoDetectorParams):
        self.params = params
        self.output_shape = (*params.size, channels(params.colour))

    def cache_key(self) -> dict[str, Any]:
        return {"detector": "none", **self.params.model_dump(mode="json")}

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        return [self._whole(image) for image in images]

    def detect_all(self, image: np.ndarray) -> list[Detection]:
        """One "face": the whole image, its box the whole image, no confidence."""
        return [self._whole(image)]

    def _whole(self, image: np.ndarray) -> Detection:
        height, width = image.shape[:2]
        return Detection(to_colour(resize(image, self.params.size), self.params.colour), "kept",
                         box=(0, 0, width, height))


def build(params: NoDetectorParams, ctx) -> WholeImage:
    """No detection: resize the whole image (for datasets of aligned, cropped faces).

    Use it for UTKFace's aligned ``*.chip.jpg`` crops or data you cropped yourself.
    """
    return WholeImage(params)


@facelab.hookimpl
def register_detectors(register):
    register("none", build, NoDetectorParams)
