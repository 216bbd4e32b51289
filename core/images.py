"""Image helpers shared by detectors and reports: decode, resize, colour mode."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

ColourMode = Literal["rgb", "grey"]

#: The largest image read, in pixels (width x height): 128 megapixels, about 400 MB once decoded
#: to RGB. Larger files are skipped with the reason ``TOO_LARGE`` rather than decoded. (Pillow's
#: own decompression-bomb check warns above ~89 and refuses above ~179 megapixels.)
MAX_PIXELS = 128 * 1024 * 1024
#: Skip reasons, as counted in ``SampleTable.skipped`` and the crop stage's statuses.
UNREADABLE_IMAGE = "unreadable image"
TOO_LARGE = f"image too large: over {MAX_PIXELS:,} pixels"


class ImageTooLarge(ValueError):
    """An image of more than ``MAX_PIXELS`` pixels (one of ``UNREADABLE`` too)."""

    def __init__(self, pixels: int | None):
        self.pixels = pixels
        size = f"{pixels:,} pixels" if pixels is not None else "size unknown"
        super().__init__(f"image too large: {size} (the limit is {MAX_PIXELS:,})")


#: Errors that mean "this file is not a readable image".
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError,
              Image.DecompressionBombError)
#: Suffixes of the image files datasets read from folders (compare lower-cased).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: How far from its end a complete JPEG must hold its end-of-image marker (FF D9).
_JPEG_TAIL = 1024
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def open_image(path: str | Path) -> Image.Image:
    """``Image.open`` (the header only, no pixels decoded) bounded by ``MAX_PIXELS``: raises
    :class:`ImageTooLarge` above it, and one of ``UNREADABLE`` for a file that is no image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:  # Pillow's own limit, if set below ours
            found = _BOMB_PIXELS.search(str(exc))
            raise ImageTooLarge(int(found.group(1)) if found else None) from None
    pixels = image.width * image.height
    if pixels > MAX_PIXELS:
        image.close()
        raise ImageTooLarge(pixels)
    return image


def image_problem(path: str | Path) -> str | None:
    """Why an image file would be skipped (``UNREADABLE_IMAGE`` or ``TOO_LARGE``), or None when
    it would decode. Cheap (~0.1 ms a file, no pixel decoding).

    PIL's ``open`` parses the header and ``verify`` checks PNG chunk checksums, but ``verify`` is a
    no-op for JPEG, so a JPEG must also end with its end-of-image marker: truncated downloads,
    the common corruption, lack it. Empty files, text and garbage fail ``open``.
    """
    try:
        with open_image(path) as image:
            kind = image.format
            image.verify()
        if kind == "JPEG":
            with open(path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - _JPEG_TAIL))
                return None if b"\xff\xd9" in f.read() else UNREADABLE_IMAGE
        return None
    except ImageTooLarge:
        return TOO_LARGE
    except Exception:  # noqa: BLE001 - PIL raises many types for broken files; all: unreadable
        return UNREADABLE_IMAGE


def readable(path: str | Path) -> bool:
    """Whether the image file would decode and is not too large (see :func:`image_problem`)."""
    return image_problem(path) is None


def skip_reason(exc: BaseException) -> str:
    """The counted reason for an error ``read_rgb`` raised."""
    return TOO_LARGE if isinstance(exc, ImageTooLarge) else UNREADABLE_IMAGE


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3), as it is stored. Raises one of ``UNREADABLE``
    (:class:`ImageTooLarge` above ``MAX_PIXELS``).

    16-bit images keep their most significant byte (65535 -> 255, as libpng's 16-to-8 strip
    does), rather than being clipped to 255; palette images take their palette's colours; an
    alpha channel or palette transparency is dropped (each pixel keeps its colour), as
    TensorFlow's ``decode_png(channels=3)`` does. No EXIF rotation is applied.
    """
    with open_image(path) as image:
        image.load()
        return to_rgb8(image)


def to_rgb8(image: Image.Image) -> np.ndarray:
    """A decoded PIL image of any mode as RGB uint8 (H, W, 3); see :func:`read_rgb`."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (PNG): keep the high byte. "I" holds 32-bit ints; PNG's 16-bit grey may
        # come as "I" in some Pillow versions, so values are taken as 16-bit and clipped.
        values = np.asarray(image).astype(np.int64)
        grey = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.asarray(image, np.float64), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("P", "PA"):
        # via RGBA so Pillow does not warn about palette transparency; alpha is then dropped
        image = image.convert("RGBA")
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
