"""Image helpers shared by detectors and reports: decode, resize, colour mode."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

ColourMode = Literal["rgb", "grey"]

#: Errors that mean "this file is not a readable image".
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
#: Suffixes of the image files datasets read from folders (compare lower-cased).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: How far from its end a complete JPEG must hold its end-of-image marker (FF D9).
_JPEG_TAIL = 1024


def readable(path: str | Path) -> bool:
    """Cheap integrity check (~0.1 ms a file, no pixel decoding): would the file decode?

    PIL's ``open`` parses the header and ``verify`` checks PNG chunk checksums, but ``verify`` is a
    no-op for JPEG, so a JPEG must also end with its end-of-image marker: truncated downloads,
    the common corruption, lack it. Empty files, text and garbage fail ``open``.
    """
    try:
        with Image.open(path) as image:
            kind = image.format
            image.verify()
        if kind == "JPEG":
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - _JPEG_TAIL))
                return b"\xff\xd9" in f.read()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many types for broken files; all: unreadable
        return False


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3). Raises one of ``UNREADABLE``."""
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to (height, width) with bilinear filtering."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def to_colour(image: np.ndarray, mode: ColourMode) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (H, W, 3) or greyscale (H, W, 1) by ITU-R 601-2 luma, as PIL does."""
    if mode == "rgb":
        return image
    return np.asarray(Image.fromarray(image).convert("L"))[..., None]


def channels(mode: ColourMode) -> int:
    return 3 if mode == "rgb" else 1
