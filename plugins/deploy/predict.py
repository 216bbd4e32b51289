"""``facelab predict``: find every face in photos with the model's own detector, crop each as
training did, classify it for every task; rows for a table, JSON or CSV; annotated copies."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.files import write_bytes
from facelab.images import UNREADABLE, read_rgb
from facelab.modelspec import ModelSpec

#: Suffixes of the files taken from folders (compared lower-cased); other files are skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
NOT_AN_IMAGE = "not an image"
NO_FACE = "no face"


@dataclass
class Face:
    """One row: a face found in a photo and its predictions, or a photo without a face."""

    file: str
    face: int | None  # 1-based, most confident first; None: no face
    box: tuple[int, int, int, int] | None
    confidence: float | None
    status: str
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)

    def row(self, spec: ModelSpec) -> dict:
        """A flat row, the same for JSON and CSV."""
        x, y, w, h = self.box if self.box is not None else (None,) * 4
        out = {"file": self.file, "face": self.face, "x": x, "y": y, "width": w, "height": h,
               "confidence": None if self.confidence is None else round(self.confidence, 6),
               "status": self.status}
        for task, classes in spec.tasks.items():
            probs = self.probabilities.get(task)
            best = None if probs is None else int(np.argmax(probs))
            out[task] = None if best is None else classes[best]
            out[f"{task}_probability"] = None if best is None else round(float(probs[best]), 6)
        return out


@dataclass
class Prediction:
    faces: list[Face]
    skipped: list[tuple[str, str]]  # (file, reason)
    photos: int  # photos read
    crops: list[np.ndarray] | None = None  # one per face row with a crop (keep_crops=True)

    @property
    def without_face(self) -> int:
        return sum(1 for f in self.faces if f.face is None)


def find_files(inputs: Sequence[Path]) -> tuple[list[Path], list[tuple[str, str]], bool]:
    """Files to read (given files, and image files found in folders, recursively and sorted),
    files skipped in folders as not images, and whether any input was a folder."""
    files, skipped, folders = [], [], False
    for given in inputs:
        path = Path(given)
        if not path.exists():
            raise FacelabError(f"{path}: no such file or folder; expected photos or folders of "
                               "photos")
        if not path.is_dir():
            files.append(path)
            continue
        folders = True
        for found in sorted(path.rglob("*")):
            if not found.is_file() or any(p.startswith(".") for p in found.relative_to(path).parts):
                continue
            if found.suffix.lower() in IMAGE_SUFFIXES:
                files.append(found)
            else:
                skipped.append((str(found), NOT_AN_IMAGE))
    return files, skipped, folders


def detect_faces(detector, image: np.ndarray) -> list:
    """Every face the detector keeps: ``detect_all`` where it has one, else ``detect``'s one."""
    detect_all = getattr(detector, "detect_all", None)
    if detect_all is not None:
        return [d for d in detect_all(image) if d.crop is not None]
    return [d for d in detector.detect([image]) if d.crop is not None]


def predict_files(files: Iterable[Path], detector, runtime: Callable, spec: ModelSpec, *,
                  batch_size: int = 64, keep_crops: bool = False,
                  warn: Callable[[str], None] = lambda message: None) -> Prediction:
    """Detect, crop and classify; batches of ``batch_size`` crops go to the model at once."""
    shape = tuple(spec.input_shape)
    faces: list[Face] = []
    skipped: list[tuple[str, str]] = []
    crops: list[np.ndarray] = []
    pending: list[tuple[Face, np.ndarray]] = []
    photos = 0

    def flush() -> None:
        if not pending:
            return
        batch = np.stack([crop for _, crop in pending]).astype(np.float32)
        outputs = runtime(batch)
        for task in spec.tasks:
            if task not in outputs:
                raise FacelabError(f"the model has no output {task!r} (it has "
                                   f"{sorted(outputs)}); its model_spec.json does not match it")
        for i, (face, _) in enumerate(pending):
            face.probabilities = {task: outputs[task][i] for task in spec.tasks}
        pending.clear()

    for path in files:
        try:
            image = read_rgb(path)
        except UNREADABLE as exc:
            skipped.append((str(path), NOT_AN_IMAGE))
            warn(f"skipped {path}: {NOT_AN_IMAGE} ({type(exc).__name__})")
            continue
        photos += 1
        found = detect_faces(detector, image)
        if not found:
            faces.append(Face(str(path), None, None, None, NO_FACE))
            continue
        for number, detection in enumerate(found, start=1):
            if detection.crop.shape != shape:
                raise FacelabError(f"the detector made a crop of shape {detection.crop.shape}, "
                                   f"but the model takes {shape}")
            face = Face(str(path), number, detection.box, detection.confidence, detection.status)
            faces.append(face)
            pending.append((face, detection.crop))
            if keep_crops:
                crops.append(detection.crop)
            if len(pending) >= batch_size:
                flush()
    flush()
    return Prediction(faces, skipped, photos, crops if keep_crops else None)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------

def csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue().encode()


def label(face: Face, spec: ModelSpec) -> str:
    row = face.row(spec)
    parts = [f"{row[t]} {row[f'{t}_probability']:.2f}" for t in spec.tasks if row[t] is not None]
    return ", ".join(parts)


def annotate(prediction: Prediction, spec: ModelSpec, folder: Path,
             names: dict[str, str]) -> list[Path]:
    """Each photo with its faces' boxes and labels drawn, as PNG files in ``folder``."""
    from PIL import Image, ImageDraw

    by_file: dict[str, list[Face]] = {}
    for face in prediction.faces:
        by_file.setdefault(face.file, []).append(face)
    written = []
    for file, faces in by_file.items():
        image = Image.fromarray(read_rgb(file))
        draw = ImageDraw.Draw(image)
        width = max(2, round(max(image.size) / 250))
        for face in faces:
            if face.face is None:
                draw.text((4, 4), NO_FACE, fill=(255, 0, 0))
                continue
            x, y, w, h = face.box
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(0, 255, 0), width=width)
            text = f"{face.face}: {label(face, spec)}"
            left, top, right, bottom = draw.textbbox((x, max(0, y - 12)), text)
            draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
            draw.text((x, max(0, y - 12)), text, fill=(0, 255, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        target = folder / names[file]
        write_bytes(target, buffer.getvalue())
        written.append(target)
    return written


def annotation_names(files: Sequence[str], inputs: Sequence[Path]) -> dict[str, str]:
    """A PNG name per photo: its path inside the folder given (or its file name), unique."""
    roots = [Path(p) for p in inputs if Path(p).is_dir()]
    names, used = {}, Counter()
    for file in dict.fromkeys(files):
        path = Path(file)
        relative = next((path.relative_to(r) for r in roots if path.is_relative_to(r)),
                        Path(path.name))
        name = relative.with_suffix(".png").as_posix()
        used[name] += 1
        if used[name] > 1:
            name = relative.with_name(f"{relative.stem}-{used[name]}.png").as_posix()
        names[file] = name
    return names
