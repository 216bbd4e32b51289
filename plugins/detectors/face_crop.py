"""The face crop every face detector shares: margin, square, resize, colour mode, and what to do
with an image without a face. A crop made from ``mtcnn``'s box and one from ``haar``'s box differ
only by the box, so the two detectors are interchangeable in a recipe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

import facelab
from facelab.data import Detection
from facelab.images import ColourMode, resize, to_colour

#: Detection statuses. Statuses of images without a face start with "no face".
FACE = "face"
KEPT = "no face: whole image kept"
DROPPED = "no face: dropped"


class FaceCropParams(facelab.Params):
    """The crop parameters of every face detector (each detector adds its own)."""

    size: tuple[int, int] = facelab.field((224, 224), "output (height, width) in pixels")
    colour: ColourMode = facelab.field("rgb", "output colour mode: rgb or grey")
    margin: float = facelab.field(
        0.1, "border added on each side of the box, as a fraction of its width/height", ge=0, le=2)
    square: bool = facelab.field(
        True, "grow the box's shorter side to make it square, so resizing does not distort")
    no_face: Literal["keep", "drop"] = facelab.field(
        "keep", "images without a face: keep the whole image resized, or drop them")


def crop_around(image: np.ndarray, centre: tuple[float, float], box_size: tuple[float, float],
                params: FaceCropParams) -> np.ndarray:
    """The crop of a face box (``centre`` x, y and ``box_size`` width, height, in pixels): the
    margin added, made square, clipped to the image, resized and converted to the colour mode."""
    (cx, cy), (w, h) = centre, box_size
    w, h = w * (1 + 2 * params.margin), h * (1 + 2 * params.margin)
    if params.square:
        w = h = max(w, h)
    height, width = image.shape[:2]
    left, top = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
    right, bottom = min(width, round(cx + w / 2)), min(height, round(cy + h / 2))
    crop = image[top:bottom, left:right]
    if crop.size == 0:  # a degenerate box; never seen, but never return an empty crop
        crop = image
    return to_colour(resize(np.ascontiguousarray(crop), params.size), params.colour)


def face_detection(image: np.ndarray, box: Sequence[float], confidence: float,
                   params: FaceCropParams,
                   levelled: tuple[np.ndarray, tuple[float, float]] | None = None) -> Detection:
    """A found face (``box`` x, y, width, height in ``image``) cropped by :func:`crop_around`;
    ``levelled``: the image rotated to level the eyes and the box's centre in it, to crop from."""
    x, y, w, h = (float(v) for v in box)
    source, centre = levelled or (image, (x + w / 2, y + h / 2))
    crop = crop_around(source, centre, (w, h), params)
    return Detection(crop, FACE, box=(int(round(x)), int(round(y)), int(round(w)), int(round(h))),
                     confidence=float(confidence))


def no_face(image: np.ndarray, params: FaceCropParams) -> Detection:
    """An image without a face: the whole image resized (``no_face: keep``) or dropped."""
    if params.no_face == "drop":
        return Detection(None, DROPPED)
    height, width = image.shape[:2]
    return Detection(to_colour(resize(image, params.size), params.colour), KEPT,
                     box=(0, 0, width, height))


#: A found face as detectors give it: at least ``box`` (x, y, width, height) and ``confidence``.
Face = dict[str, Any]


def best_face(image: np.ndarray, faces: list[Face], pick: str, params: FaceCropParams,
              crop: Callable[[Face], Detection]) -> Detection:
    """The training crop: ``crop`` of the most confident face (``pick: confidence``) or the
    largest box (``largest``), the first on a tie; no face: :func:`no_face`."""
    if not faces:
        return no_face(image, params)
    if pick == "largest":
        return crop(max(faces, key=lambda face: face["box"][2] * face["box"][3]))
    return crop(max(faces, key=lambda face: face["confidence"]))


def every_face(image: np.ndarray, faces: list[Face], params: FaceCropParams,
               crop: Callable[[Face], Detection]) -> list[Detection]:
    """Every face (``facelab predict``), the most confident first, each cropped as
    :func:`best_face` crops it; no face: the whole image (``no_face: keep``) or nothing."""
    if not faces:
        whole = no_face(image, params)
        return [] if whole.crop is None else [whole]
    return [crop(face) for face in sorted(faces, key=lambda face: -face["confidence"])]
