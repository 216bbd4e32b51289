"""Generated GENKI-4K and IMDB-WIKI data in the real on-disk layouts, for tests and CPU smoke runs.

- GENKI-4K: ``<root>/files/file0001.jpg ...`` and ``<root>/labels.txt`` (``smile yaw pitch roll``).
- IMDB-WIKI: ``<root>/<subset>_crop/<subset>.mat`` (the struct written with ``scipy.io.savemat``
  with the real fields and dtypes) and the images at ``<subset>_crop/<full_path>``, including
  the rows the loader must skip: no face (-inf), a second face, NaN gender, impossible ages.

Faces are drawn with PIL so each label is learnable: the mouth curves up for a smile, long hair
marks a woman, and hair greyness, forehead lines and face width grow with the age group.

Command line (docs/reproduce-multitask-2023.md)::

    python tests/fixtures_multitask.py OUT_DIR [--genki 4000] [--imdb 3000]
"""

from __future__ import annotations

import argparse
import datetime
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw

#: The paper's age groups (inclusive), as in plugins/datasets/imdb_wiki.py.
AGE_GROUPS = ((0, 15), (16, 25), (26, 35), (36, 45), (46, 60), (61, 100))


def draw_face(rng: np.random.Generator, size: int, *, smile: int | None = None,
              gender: int | None = None, age_group: int | None = None) -> Image.Image:
    """A face-like RGB image; ``smile`` 1/0, ``gender`` 0 male / 1 female, ``age_group`` 0-5."""
    s = size / 64
    bg = tuple(int(v) for v in rng.integers(40, 200, 3))
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    skin = tuple(int(np.clip(c + rng.normal(0, 15), 0, 255)) for c in (210, 170, 140))
    cx, cy = size / 2 + rng.normal(0, 1.5 * s), size / 2 + rng.normal(0, 1.5 * s)
    group = 2 if age_group is None else age_group
    fw = (15 + 1.0 * group + rng.uniform(-0.5, 0.5)) * s
    fh = rng.uniform(21, 24) * s
    grey = group / 5
    hair = tuple(int(v) for v in np.array([50, 35, 20]) * (1 - grey) + np.array([235, 235, 235]) * grey)
    if gender == 1:  # long hair behind the face
        draw.rectangle([cx - fw - 5 * s, cy - fh, cx + fw + 5 * s, cy + fh * 1.0], fill=hair)
    draw.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    draw.chord([cx - fw, cy - fh - 3 * s, cx + fw, cy - fh * 0.35], 180, 360, fill=hair)
    for line in range(group):  # forehead lines
        y = cy - fh * 0.45 + line * 1.6 * s
        draw.line([cx - fw * 0.5, y, cx + fw * 0.5, y], fill=(120, 80, 60), width=max(1, int(s)))
    for side in (-1, 1):
        ex, ey = cx + side * fw * 0.45, cy - fh * 0.05
        draw.ellipse([ex - 3 * s, ey - 2 * s, ex + 3 * s, ey + 2 * s], fill=(250, 250, 250))
        draw.ellipse([ex - 1.3 * s, ey - 1.3 * s, ex + 1.3 * s, ey + 1.3 * s], fill=(30, 20, 10))
    my = cy + fh * 0.5
    if smile:  # an open smile: a wide downward chord with teeth
        draw.chord([cx - 8 * s, my - 5 * s, cx + 8 * s, my + 5 * s], 0, 180, fill=(140, 30, 40))
        draw.rectangle([cx - 5 * s, my, cx + 5 * s, my + 1.5 * s], fill=(250, 250, 250))
    else:
        draw.line([cx - 5 * s, my, cx + 5 * s, my], fill=(140, 30, 40), width=max(1, int(2 * s)))
    image = image.rotate(rng.uniform(-6, 6), resample=Image.BILINEAR, fillcolor=bg)
    pixels = np.asarray(image, np.float32) + rng.normal(0, 5, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_genki4k(root: Path, count: int = 200, size: int = 64, seed: int = 0) -> Path:
    """``root/files/fileNNNN.jpg`` and ``root/labels.txt``, 54% smiling as in GENKI-4K."""
    rng = np.random.default_rng(seed)
    (root / "files").mkdir(parents=True, exist_ok=True)
    smiles = (rng.random(count) < 2162 / 4000).astype(int)
    lines = []
    for i, smile in enumerate(smiles, start=1):
        draw_face(rng, size, smile=int(smile)).save(root / "files" / f"file{i:04d}.jpg", quality=90)
        yaw, pitch, roll = rng.normal(0, 0.1, 3)
        lines.append(f"{smile} {yaw:.6f} {pitch:.6f} {roll:.6f}")
    # GENKI-4K's labels.txt uses CRLF line ends.
    (root / "labels.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return root


def datenum(date: datetime.date, fraction: float = 0.0) -> float:
    """MATLAB datenum: days since the year 0 (Python's ordinal + 366)."""
    return date.toordinal() + 366 + fraction


@dataclass
class ImdbWikiFixture:
    """What was written: the crop folder, the .mat, and what the loader should make of it."""

    folder: Path
    mat: Path
    #: one dict per usable row: full_path, gender (0 male, 1 female), age (years), group (0-5)
    valid: list[dict] = field(default_factory=list)
    #: skip reason -> rows (the loader's reason strings)
    skipped: Counter = field(default_factory=Counter)


def write_imdb_wiki(root: Path, subset: str = "imdb", count: int = 120, size: int = 64,
                    seed: int = 0, invalid: int = 4) -> ImdbWikiFixture:
    """``root/<subset>_crop/<subset>.mat`` plus images; ``count`` usable rows and, per reason,
    ``invalid`` rows the loader must skip (no face, second face, NaN gender, age over 100,
    birth after the photo). Ages are spread evenly over the six groups; genders alternate."""
    rng = np.random.default_rng(seed)
    folder = root / f"{subset}_crop"
    folder.mkdir(parents=True, exist_ok=True)
    rows, fixture = [], ImdbWikiFixture(folder, folder / f"{subset}.mat")
    kinds = ["ok"] * count + [k for k in ("no face", "second face", "nan gender", "old", "unborn")
                              for _ in range(invalid)]
    order = rng.permutation(len(kinds))
    for n, i in enumerate(order):
        kind = kinds[i]
        group = n % 6
        lo, hi = AGE_GROUPS[group]
        age = int(rng.integers(lo, hi + 1))
        if kind == "old":
            age = int(rng.integers(101, 130))
        elif kind == "unborn":
            age = -int(rng.integers(1, 5))
        taken = int(rng.integers(1995, 2015))
        month = int(rng.integers(1, 13))
        # The loader's rule: age = taken - birth year - (born July-December).
        birth = datetime.date(taken - age - (month >= 7), month, int(rng.integers(1, 29)))
        gender = n % 2  # 0 male, 1 female (the .mat codes male as 1)
        person = 1000 + n
        if subset == "imdb":
            name = f"{group:02d}/nm{person:07d}_rm{n:09d}_{birth.year}-{birth.month}-{birth.day}_{taken}.jpg"
        else:
            name = f"{group:02d}/{person}_{birth.isoformat()}_{taken}.jpg"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        draw_face(rng, size, gender=gender, age_group=min(group, 5)).save(folder / name, quality=90)
        rows.append({
            "dob": datenum(birth, rng.uniform(0, 0.99)), "photo_taken": taken, "full_path": name,
            "gender": np.nan if kind == "nan gender" else float(1 - gender),
            "face_score": -np.inf if kind == "no face" else float(rng.uniform(0.5, 6)),
            "second_face_score": float(rng.uniform(0.5, 3)) if kind == "second face" else np.nan,
            "name": f"Person {person}",
        })
        if kind == "ok":
            fixture.valid.append({"full_path": name, "gender": gender, "age": age, "group": group})
        else:
            reason = {"no face": "no face (face_score -inf)", "second face": "second face present",
                      "nan gender": "gender unknown (NaN)", "old": "age outside 0-100",
                      "unborn": "age outside 0-100"}[kind]
            fixture.skipped[reason] += 1
    write_mat(fixture.mat, subset, rows)
    return fixture


def write_mat(path: Path, subset: str, rows: list[dict]) -> None:
    """The struct as IMDB-WIKI ships it: 1xN fields, cell arrays of strings, uint16 years."""
    def cells(values):
        out = np.empty((1, len(values)), dtype=object)
        out[0, :] = values
        return out

    struct = {
        "dob": np.array([[r["dob"] for r in rows]], np.float64),
        "photo_taken": np.array([[r["photo_taken"] for r in rows]], np.uint16),
        "full_path": cells([np.array([r["full_path"]]) for r in rows]),
        "gender": np.array([[r["gender"] for r in rows]], np.float64),
        "name": cells([np.array([r["name"]]) for r in rows]),
        "face_location": cells([np.array([[10.0, 10.0, 50.0, 50.0]]) for _ in rows]),
        "face_score": np.array([[r["face_score"] for r in rows]], np.float64),
        "second_face_score": np.array([[r["second_face_score"] for r in rows]], np.float64),
    }
    if subset == "imdb":
        names = sorted({r["name"] for r in rows})
        struct["celeb_names"] = cells([np.array([x]) for x in names])
        struct["celeb_id"] = np.array([[names.index(r["name"]) + 1 for r in rows]], np.float64)
    scipy.io.savemat(path, {subset: struct})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write GENKI-4K/ and imdb_crop/ into")
    parser.add_argument("--genki", type=int, default=4000, help="GENKI-4K images (real: 4000)")
    parser.add_argument("--imdb", type=int, default=3000, help="usable IMDB rows")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args()
    genki = write_genki4k(args.out / "GENKI-4K", args.genki, args.size)
    imdb = write_imdb_wiki(args.out, "imdb", args.imdb, args.size, invalid=max(1, args.imdb // 100))
    print(f"GENKI4K_DIR={genki}\nIMDB_WIKI_DIR={imdb.folder}")


if __name__ == "__main__":
    main()
