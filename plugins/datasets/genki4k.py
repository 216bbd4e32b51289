"""Dataset ``genki4k``: the MPLab GENKI-4K smile set (``files/file0001.jpg`` + ``labels.txt``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

import facelab
from facelab.data import SampleTable, Task
from facelab.errors import FacelabError

#: Class names of the ``smile`` task, in label order (labels.txt: 0 non-smile, 1 smile).
SMILE_CLASSES = ("non-smile", "smile")
#: Extra columns kept from labels.txt: head pose in radians.
POSE_COLUMNS = ("yaw", "pitch", "roll")
#: The labels file: ``labels.txt`` (common re-distributions) or the MPLab release's name.
LABELS_FILES = ("labels.txt", "GENKI-4K_Labels.txt")
IMAGES_DIR = "files"


def image_name(index: int) -> str:
    """GENKI-4K's file name for the 1-based line ``index`` of labels.txt: ``file0001.jpg``."""
    return f"file{index:04d}.jpg"


def read_labels(path: Path) -> np.ndarray:
    """labels.txt as an (N, 4) float array: smile, yaw, pitch, roll; a bad line is an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FacelabError(f"genki4k: cannot read {path} ({exc})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields and number == len(lines):
            continue  # a trailing blank line
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        if len(values) != 4 or values[0] not in (0.0, 1.0) or not np.isfinite(values).all():
            raise FacelabError(
                f"genki4k: {path} line {number}: expected 'smile yaw pitch roll' with smile 0 or 1 "
                f"and three numbers, got {line.strip()!r}")
        rows.append(values)
    if not rows:
        raise FacelabError(f"genki4k: {path} is empty; expected one 'smile yaw pitch roll' line "
                           "per image")
    return np.asarray(rows, dtype=np.float64)


def scan(root: Path) -> SampleTable:
    """One row per labels.txt line whose image exists; missing images are counted, not fatal."""
    import pandas as pd

    if not root.is_dir():
        raise FacelabError(f"genki4k: root {root} is not a folder; expected the GENKI-4K folder "
                           f"holding {LABELS_FILES[0]} and {IMAGES_DIR}/file0001.jpg ...")
    images = root / IMAGES_DIR
    labels_path = next((root / n for n in LABELS_FILES if (root / n).is_file()), None)
    if labels_path is None:
        raise FacelabError(f"genki4k: {root / LABELS_FILES[0]} not found (nor "
                           f"{LABELS_FILES[1]}); expected one 'smile yaw pitch roll' line per image")
    if not images.is_dir():
        raise FacelabError(f"genki4k: {images} not found; expected the folder of images "
                           "file0001.jpg, file0002.jpg, ...")
    labels = read_labels(labels_path)
    paths = [images / image_name(i) for i in range(1, len(labels) + 1)]
    exists = np.array([p.is_file() for p in paths])
    frame = pd.DataFrame({"path": [str(p) for p in paths], "source": "genki4k",
                          "smile": labels[:, 0].astype(np.int64)})
    for i, column in enumerate(POSE_COLUMNS, start=1):
        frame[column] = labels[:, i]
    skipped = Counter()
    if not exists.all():
        skipped["image file missing"] = int((~exists).sum())
        frame = frame[exists]
    if frame.empty:
        raise FacelabError(f"genki4k: none of the {len(labels)} images listed in {labels_path} "
                           f"exist in {images}")
    return SampleTable(frame, tasks(None), skipped)


class Genki4kParams(facelab.Params):
    root: str = facelab.field(..., "the GENKI-4K folder: labels.txt and files/file0001.jpg ...",
                              path=True)


def tasks(params: Genki4kParams | None) -> dict[str, Task]:
    return {"smile": Task("smile", SMILE_CLASSES)}


def build(params: Genki4kParams, ctx) -> SampleTable:
    """GENKI-4K (MPLab): 4,000 faces labelled smile / non-smile, with head pose.

    Layout: ``<root>/labels.txt`` (or the MPLab release's ``GENKI-4K_Labels.txt``; line i:
    ``smile yaw pitch roll``, smile 1 or 0) and
    ``<root>/files/file0001.jpg`` ... ``file4000.jpg``, line i describing file i. Task ``smile``
    (non-smile, smile); ``yaw``, ``pitch`` and ``roll`` (radians) are kept as extra columns. Lines
    whose image is missing are skipped and counted; a malformed line is an error.
    """
    return scan(ctx.resolve_path(params.root))


@facelab.hookimpl
def register_datasets(register):
    register("genki4k", build, Genki4kParams, tasks=tasks, columns=POSE_COLUMNS,
             licence="research use under the terms of the MPLab (UCSD) GENKI release: read its "
                     "README before use; the images come from the Internet and their "
                     "copyrights stay with their owners",
             citation="The MPLab GENKI Database, GENKI-4K Subset. http://mplab.ucsd.edu")
