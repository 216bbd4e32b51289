"""Small data sets in the layouts of a user's own data, for tests: a folder of class folders
(``root/<class>/<image>``) and FairFace's release (``fairface_label_{train,val}.csv`` with
``file,age,gender,race,service_test`` and the images at ``train/1.jpg``, ``val/1.jpg``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

#: FairFace's values, as its CSVs write them.
RACES7 = ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian",
          "Middle Eastern")
AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")


def image_bytes(seed: int = 0, fmt: str = "JPEG", size: int = 24) -> bytes:
    """A random RGB image encoded as ``fmt`` (JPEG, PNG, BMP, WEBP)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def write_photos(root: Path) -> Path:
    """cats: a.jpg, b.JPG, c.jpeg, a truncated JPEG and a text file; dogs: .png, .BMP, .webp and
    two images in dogs/puppies/; a stray README.md in the root; hidden files and a hidden folder.

    Read without ``recursive``: cats 3, dogs 3; skipped: 1 unreadable, 1 not an image, 1 outside
    the class folders, 2 in a nested folder. With ``recursive``: dogs 5, no nested skips."""
    write(root / "cats" / "a.jpg", image_bytes(1))
    write(root / "cats" / "b.JPG", image_bytes(2))
    write(root / "cats" / "c.jpeg", image_bytes(3))
    whole = image_bytes(4)
    write(root / "cats" / "broken.jpg", whole[: len(whole) // 2])
    write(root / "cats" / "notes.txt", "not an image")
    write(root / "dogs" / "d.png", image_bytes(5, "PNG"))
    write(root / "dogs" / "e.BMP", image_bytes(6, "BMP"))
    write(root / "dogs" / "f.webp", image_bytes(7, "WEBP"))
    write(root / "dogs" / "puppies" / "g.jpg", image_bytes(8))
    write(root / "dogs" / "puppies" / "h.PNG", image_bytes(9, "PNG"))
    write(root / "README.md", "my photos")
    write(root / ".DS_Store", b"\0\1")
    write(root / ".thumbnails" / "x.jpg", image_bytes(10))
    write(root / "cats" / ".x.jpg", image_bytes(11))
    return root


def write_fairface(root: Path, train_per_race: int = 3, val_per_race: int = 1) -> Path:
    """FairFace's layout: ``train_per_race`` train rows and ``val_per_race`` val rows per race,
    plus three more train rows: train/900.jpg (Black) whose image is missing, train/901.jpg with
    the unknown race value ``Martian``, and train/902.jpg (White) with an empty age."""
    rows: dict[str, list[tuple[str, ...]]] = {"train": [], "val": []}
    for split, per_race in (("train", train_per_race), ("val", val_per_race)):
        for r, race in enumerate(RACES7):
            for k in range(per_race):
                n = len(rows[split]) + 1
                rows[split].append((f"{split}/{n}.jpg", AGES[(r + k) % 9],
                                    ("Male", "Female")[k % 2], race, "True"))
    rows["train"] += [("train/900.jpg", "20-29", "Male", "Black", "False"),
                      ("train/901.jpg", "30-39", "Female", "Martian", "False"),
                      ("train/902.jpg", "", "Male", "White", "False")]
    for split, table in rows.items():
        for i, (file, *_) in enumerate(table):
            if file != "train/900.jpg":
                write(root / file, image_bytes(i + 100 * (split == "val")))
        lines = ["file,age,gender,race,service_test", *(",".join(row) for row in table)]
        write(root / f"fairface_label_{split}.csv", "\n".join(lines) + "\n")
    return root
