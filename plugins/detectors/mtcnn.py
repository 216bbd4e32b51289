"""Detector ``mtcnn``: MTCNN face detection (``mtcnn`` package, weights included), crop, align."""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any, Literal

import numpy as np
from PIL import Image

import facelab
from facelab.data import Detection
from facelab.images import channels
from facelab.plugins.detectors.face_crop import (  # noqa: F401 (statuses, named by callers)
    DROPPED, FACE, KEPT, Face, FaceCropParams, best_face, every_face, face_detection)


class MtcnnParams(FaceCropParams):
    min_confidence: float = facelab.field(
        0.9, "faces detected with a lower confidence are ignored", ge=0, le=1)
    min_face_size: int = facelab.field(20, "smallest face side MTCNN looks for, in pixels", ge=4)
    pick: Literal["confidence", "largest"] = facelab.field(
        "confidence", "which face to keep when there are several: most confident or largest box")
    align: bool = facelab.field(
        False, "rotate the image about the eyes so the eye line is level before cropping")
    batch_size: int = facelab.field(
        32, "same-size images per MTCNN call (batches are faster; results do not change)", ge=1)


class MtcnnDetector:
    """Finds the face with MTCNN, crops it with a margin (optionally aligned) and resizes it."""

    def __init__(self, params: MtcnnParams):
        self.params = params
        self.batch_size = params.batch_size
        self.output_shape = (*params.size, channels(params.colour))
        self._mtcnn = None  # built on the first detect() call: building and validating stay cheap

    def cache_key(self) -> dict[str, Any]:
        # batch_size is left out: it changes speed, not crops (tests/test_race_mtcnn.py checks it).
        params = self.params.model_dump(mode="json", exclude={"batch_size"})
        return {"detector": "mtcnn", "mtcnn": version("mtcnn"), "crop_version": 1, **params}

    def _detector(self):
        if self._mtcnn is None:
            from mtcnn import MTCNN

            self._mtcnn = MTCNN()
        return self._mtcnn

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        if not images:
            return []
        # mtcnn 1.0 takes a Python list as one batch and answers one list of faces per image.
        found = self._detector().detect_faces(list(images),
                                              min_face_size=self.params.min_face_size)
        return [self._best(image, faces) for image, faces in zip(images, found, strict=True)]

    def detect_all(self, image: np.ndarray) -> list[Detection]:
        """Every face above ``min_confidence`` in one image, most confident first, each cropped as
        ``detect`` crops its face; no face: the whole image (``no_face: keep``) or nothing."""
        (faces,) = self._detector().detect_faces([image], min_face_size=self.params.min_face_size)
        return every_face(image, self._confident(faces), self.params,
                          lambda face: self._crop(image, face))

    def _confident(self, faces: list[Face]) -> list[Face]:
        return [f for f in faces if f["confidence"] >= self.params.min_confidence]

    def _best(self, image: np.ndarray, faces: list[Face]) -> Detection:
        """The training crop: the most confident (or largest) face, else the no-face rule."""
        return best_face(image, self._confident(faces), self.params.pick, self.params,
                         lambda face: self._crop(image, face))

    def _crop(self, image: np.ndarray, face: Face) -> Detection:
        """One face: optional eye levelling, then the shared crop (margin, square, resize,
        colour mode)."""
        levelled = None
        if self.params.align:
            x, y, w, h = (float(v) for v in face["box"])
            levelled = level_eyes(image, face["keypoints"], (x + w / 2, y + h / 2))
        return face_detection(image, face["box"], face["confidence"], self.params, levelled)


def eye_angle(keypoints: dict) -> float:
    """Angle of the eye line in degrees; positive when the eye on the image's right is lower."""
    (lx, ly), (rx, ry) = sorted([tuple(keypoints["left_eye"]), tuple(keypoints["right_eye"])])
    return math.degrees(math.atan2(float(ry) - float(ly), float(rx) - float(lx)))


def level_eyes(image: np.ndarray, keypoints: dict, point: tuple[float, float],
               ) -> tuple[np.ndarray, tuple[float, float]]:
    """Rotate ``image`` about the eyes' midpoint to level them; move ``point`` with it."""
    angle = eye_angle(keypoints)
    ex = (float(keypoints["left_eye"][0]) + float(keypoints["right_eye"][0])) / 2
    ey = (float(keypoints["left_eye"][1]) + float(keypoints["right_eye"][1])) / 2
    # PIL rotates counter-clockwise (as seen) by +angle, which levels a line sloping down by angle.
    rotated = np.asarray(Image.fromarray(image).rotate(angle, Image.BILINEAR, center=(ex, ey)))
    theta = math.radians(angle)  # the same rotation applied to a point, in y-down coordinates
    dx, dy = point[0] - ex, point[1] - ey
    moved = (ex + dx * math.cos(theta) + dy * math.sin(theta),
             ey - dx * math.sin(theta) + dy * math.cos(theta))
    return rotated, moved


def build(params: MtcnnParams, ctx) -> MtcnnDetector:
    """MTCNN face detection: crop the best face with a margin, optionally level the eyes, resize.

    Uses the ``mtcnn`` package (its weights ship with it, so it works offline) on the CPU.
    Faces under ``min_confidence`` are ignored; images without a face are kept whole (resized) or
    dropped (``no_face``). Statuses: ``face``, ``no face: whole image kept``, ``no face: dropped``.
    ``facelab predict`` crops every face above ``min_confidence`` the same way (``detect_all``).
    """
    return MtcnnDetector(params)


@facelab.hookimpl
def register_detectors(register):
    register("mtcnn", build, MtcnnParams)
