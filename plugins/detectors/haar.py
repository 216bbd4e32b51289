"""Detector ``haar``: OpenCV's Haar cascade face detector (the cascades ship in the OpenCV
wheel, so it works offline), cropped exactly as ``mtcnn`` crops."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

import facelab
from facelab.data import Detection
from facelab.errors import FacelabError
from facelab.images import channels
from facelab.plugins.detectors.face_crop import (
    Face, FaceCropParams, best_face, every_face, face_detection)

#: How to get OpenCV when it is missing.
OPENCV_EXTRA = "pip install 'facelab[detectors]'"
#: The frontal-face cascades of OpenCV's ``cv2/data`` (name -> file).
CASCADES = {"default": "haarcascade_frontalface_default.xml",
            "alt": "haarcascade_frontalface_alt.xml",
            "alt2": "haarcascade_frontalface_alt2.xml",
            "alt_tree": "haarcascade_frontalface_alt_tree.xml"}


class HaarParams(FaceCropParams):
    cascade: Literal["default", "alt", "alt2", "alt_tree"] = facelab.field(
        "default", "OpenCV's frontal-face cascade (haarcascade_frontalface_<name>.xml)")
    scale_factor: float = facelab.field(
        1.1, "how much the image shrinks between scales: smaller finds more, slower", ge=1.01,
        le=2)
    min_neighbors: int = facelab.field(
        5, "overlapping raw detections a face needs: higher means fewer false faces", ge=0,
        le=100)
    min_face_size: int = facelab.field(20, "smallest face side looked for, in pixels", ge=4)
    equalize: bool = facelab.field(
        True, "equalise the grey image's histogram before detecting (evens out lighting)")
    pick: Literal["confidence", "largest"] = facelab.field(
        "largest", "which face to keep when there are several: the one most raw detections "
                   "agree on (confidence), or the largest box")


def import_cv2():
    """OpenCV, or a one-line error saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise FacelabError(f"data.detector: haar needs OpenCV, which is not installed; "
                           f"{OPENCV_EXTRA}") from None
    return cv2


class HaarDetector:
    """Finds faces with a Haar cascade on the grey image, crops the chosen one with a margin and
    resizes it. ``confidence`` is the number of raw detections merged into the box."""

    #: OpenCV detects one image at a time; this only sets how many images are read per call.
    batch_size = 16

    def __init__(self, params: HaarParams):
        self.params = params
        self.output_shape = (*params.size, channels(params.colour))
        self.cv2 = import_cv2()
        self.cascade_path = Path(self.cv2.data.haarcascades) / CASCADES[params.cascade]
        self._classifier = None  # loaded on the first detect() call: building stays cheap

    def cache_key(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.cascade_path.read_bytes()).hexdigest()[:16]
        return {"detector": "haar", "opencv": self.cv2.__version__,
                "cascade_file": self.cascade_path.name, "cascade_sha256": digest,
                "crop_version": 1, **self.params.model_dump(mode="json")}

    def _faces(self, image: np.ndarray) -> list[Face]:
        """Every face in one RGB image: its box (x, y, width, height) and, as its confidence,
        its merged-detection count."""
        cv2, p = self.cv2, self.params
        if self._classifier is None:
            self._classifier = cv2.CascadeClassifier(str(self.cascade_path))
            if self._classifier.empty():
                raise FacelabError(f"data.detector.cascade: cannot load {self.cascade_path}; "
                                   f"reinstall OpenCV ({OPENCV_EXTRA})")
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if p.equalize:
            grey = cv2.equalizeHist(grey)
        boxes, counts = self._classifier.detectMultiScale2(
            grey, scaleFactor=p.scale_factor, minNeighbors=p.min_neighbors,
            minSize=(p.min_face_size, p.min_face_size))
        return [{"box": tuple(int(v) for v in box), "confidence": float(count)}
                for box, count in zip(boxes, counts)]

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        return [best_face(image, self._faces(image), self.params.pick, self.params,
                          lambda face: self._crop(image, face))
                for image in images]

    def detect_all(self, image: np.ndarray) -> list[Detection]:
        """Every face in one image, the most confident first, each cropped as ``detect`` crops
        its face; no face: the whole image (``no_face: keep``) or nothing."""
        return every_face(image, self._faces(image), self.params,
                          lambda face: self._crop(image, face))

    def _crop(self, image: np.ndarray, face: Face) -> Detection:
        return face_detection(image, face["box"], face["confidence"], self.params)


def build(params: HaarParams, ctx) -> HaarDetector:
    """OpenCV's Haar cascade face detection: crop the chosen face with a margin, resize.

    Needs OpenCV (``pip install 'facelab[detectors]'``); its frontal-face cascades ship inside
    the wheel, so it works offline. Cropping (``size``, ``colour``, ``margin``, ``square``,
    ``no_face``) is ``mtcnn``'s, so the two are interchangeable in a recipe. It runs on the grey
    image (optionally histogram-equalised); a face's confidence is the number of raw detections
    merged into its box. Statuses: ``face``, ``no face: whole image kept``, ``no face: dropped``.
    The cascades are frontal-face ones: faces turned well to the side are often not found.
    """
    return HaarDetector(params)


@facelab.hookimpl
def register_detectors(register):
    register("haar", build, HaarParams)
