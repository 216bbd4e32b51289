"""The detect/crop stage: read files, batch same-size images, cache every crop on disk."""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.data import Detector
from facelab.files import write_bytes
from facelab.images import UNREADABLE, UNREADABLE_IMAGE, read_rgb, skip_reason

DROPPED = b"dropped"
#: A temporary file older than this is left from an interrupted run (a write takes milliseconds).
STALE_SECONDS = 10 * 60


@dataclass
class CropResult:
    """Crops for the kept rows of a sample table, and what happened to every image."""

    images: np.ndarray  # uint8 (kept, H, W, C)
    kept: np.ndarray  # bool (rows,)
    statuses: Counter
    detector_calls: int  # images the detector actually saw (0 when everything was cached)
    row_statuses: list[str] = field(default_factory=list)  # every row's, in ``paths`` order


class CropCache:
    """One file per image: ``<root>/<key>/<hash[:2]>/<hash>.npy`` (or ``.none`` when dropped).

    ``key`` digests the detector's ``cache_key()``; ``hash`` digests the file's bytes, so a renamed
    file still hits and a changed file misses. Every file is written to a temporary name and
    renamed, so an interrupted run never leaves a half-written crop, and processes sharing the
    cache at once each write whole files (the same content under the same name). Temporary files
    left by a killed run are removed by the next one (``remove_stale``).
    """

    def __init__(self, root: Path, detector_key: dict):
        digest = hashlib.sha256(json.dumps(detector_key, sort_keys=True).encode()).hexdigest()
        self.folder = root / "crops" / digest[:16]

    def remove_stale(self, older_than: float = STALE_SECONDS) -> int:
        """Delete ``*.tmp`` files older than ``older_than`` seconds; how many were deleted."""
        if not self.folder.is_dir():
            return 0
        limit, removed = time.time() - older_than, 0
        for path in self.folder.glob("*/*.tmp"):
            try:
                if path.stat().st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError:  # another process removed or renamed it first
                continue
        return removed

    def _path(self, content_hash: str) -> Path:
        return self.folder / content_hash[:2] / content_hash

    def get(self, content_hash: str) -> tuple[bool, np.ndarray | None, str | None]:
        """(hit, crop or None, status)."""
        base = self._path(content_hash)
        npy = base.with_suffix(".npy")
        if npy.exists():
            try:
                return True, np.load(npy), _read_status(base)
            except (OSError, ValueError, EOFError):  # damaged outside facelab: crop it again
                return False, None, None
        if base.with_suffix(".none").exists():
            return True, None, _read_status(base)
        return False, None, None

    def put(self, content_hash: str, crop: np.ndarray | None, status: str) -> None:
        base = self._path(content_hash)
        base.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(base.with_suffix(".status"), status.encode())
        if crop is None:
            write_bytes(base.with_suffix(".none"), DROPPED)
        else:
            buffer = io.BytesIO()
            np.save(buffer, crop)
            write_bytes(base.with_suffix(".npy"), buffer.getvalue())


def _read_status(base: Path) -> str:
    status = base.with_suffix(".status")
    return status.read_text() if status.exists() else "cached"


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def crop_all(paths: list[str], detector: Detector, cache_dir: Path, progress) -> CropResult:
    """Crops for every path; unreadable images and detector drops are excluded and counted."""
    cache = CropCache(cache_dir, detector.cache_key())
    cache.remove_stale()
    crops: list[np.ndarray | None] = [None] * len(paths)
    statuses: Counter = Counter()
    row_statuses: list[str] = [""] * len(paths)
    pending: dict[tuple[int, ...], list[tuple[int, str, np.ndarray]]] = defaultdict(list)
    calls = 0

    def record(row: int, status: str) -> None:
        statuses[status] += 1
        row_statuses[row] = status

    def flush(shape: tuple[int, ...]) -> None:
        nonlocal calls
        batch = pending.pop(shape)
        results = detector.detect([image for _, _, image in batch])
        calls += len(batch)
        for (row, digest, _), result in zip(batch, results, strict=True):
            cache.put(digest, result.crop, result.status)
            crops[row] = result.crop
            record(row, result.status)

    for row in progress.track(range(len(paths)), "detecting and cropping faces", total=len(paths)):
        try:
            digest = file_hash(paths[row])
        except OSError:
            record(row, UNREADABLE_IMAGE)
            continue
        hit, crop, status = cache.get(digest)
        if hit:
            crops[row] = crop
            record(row, status)
            continue
        try:
            image = read_rgb(paths[row])
        except UNREADABLE as exc:
            record(row, skip_reason(exc))  # "unreadable image" or "image too large: ..."
            continue
        # mtcnn 1.0 returns wrong boxes for mixed-size batches, so batches hold one size only.
        pending[image.shape].append((row, digest, image))
        if len(pending[image.shape]) >= detector.batch_size:
            flush(image.shape)
    for shape in list(pending):
        flush(shape)

    kept = np.array([c is not None for c in crops], dtype=bool)
    shape = tuple(detector.output_shape)
    images = np.empty((int(kept.sum()), *shape), np.uint8)
    for i, row in enumerate(np.flatnonzero(kept)):
        if crops[row].shape != shape:
            raise ValueError(f"detector returned a crop of shape {crops[row].shape}, "
                             f"expected {shape}")
        images[i] = crops[row]
    return CropResult(images, kept, statuses, calls, row_statuses)
