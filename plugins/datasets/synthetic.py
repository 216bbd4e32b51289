"""Dataset ``synthetic``: generated face-like images in UTKFace's file layout.

The images are drawn once into the cache folder and then read by the ``utkface`` loader, so the
quickstart, the tests and the race-paper recipes exercise the real on-disk path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pydantic import field_validator

import facelab
from facelab.data import SampleTable
from facelab.errors import FacelabError, did_you_mean
from facelab.plugins.datasets.utkface import (EXTRA_COLUMNS, RACES, check_races, scan,
                                              utkface_name, utkface_tasks)

#: UTKFace's race counts (White, Black, Asian, Indian, Others); the default class mix.
UTKFACE_RACE_COUNTS = {"white": 10078, "black": 4526, "asian": 3434, "indian": 3975,
                       "others": 1692}
#: Bump when drawing changes, so old caches are not reused.
GENERATOR_VERSION = 1

# Per-race visual cues. Skin tones overlap between neighbours once lighting varies, so a model
# has to combine tone with eye shape and nose width; every cue is jittered per image.
_SKIN = {"white": (228, 196, 172), "black": (96, 64, 46), "asian": (222, 186, 140),
         "indian": (164, 112, 80), "others": (196, 150, 112)}
_EYE_HEIGHT = {"white": 1.0, "black": 1.0, "asian": 0.4, "indian": 0.8, "others": 0.7}
_NOSE_WIDTH = {"white": 0.7, "black": 1.4, "asian": 0.9, "indian": 1.0, "others": 1.1}


class SyntheticParams(facelab.Params):
    count: int = facelab.field(800, "images to generate across all five races", ge=5)
    class_counts: dict[str, int] | None = facelab.field(
        None, "exact images per race (overrides count), e.g. UTKFace's real counts")
    size: int = facelab.field(64, "image side in pixels", ge=16, le=512)
    classes: list[str] = facelab.field(["white", "black", "asian", "indian"],
                                       "races to use, in label order", min_length=2)
    seed: int = facelab.field(0, "generation seed", ge=0)
    root: str | None = facelab.field(None, "generate here instead of the cache folder", path=True)

    @field_validator("classes")
    @classmethod
    def _races(cls, value: list[str]) -> list[str]:
        return check_races(value)

    @field_validator("class_counts")
    @classmethod
    def _counted_races(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            check_races(list(value))
        return value


def class_counts(params: SyntheticParams) -> dict[str, int]:
    """Images per race: the exact counts given, or ``count`` split in UTKFace's proportions."""
    if params.class_counts is not None:
        for race in params.class_counts:
            if race not in RACES:
                raise FacelabError("data.dataset.class_counts: "
                                   + did_you_mean(race, RACES, what="race"))
        return {race: int(params.class_counts.get(race, 0)) for race in RACES}
    total = sum(UTKFACE_RACE_COUNTS.values())
    exact = {r: params.count * n / total for r, n in UTKFACE_RACE_COUNTS.items()}
    counts = {r: int(v) for r, v in exact.items()}
    by_remainder = sorted(exact, key=lambda r: exact[r] - counts[r], reverse=True)
    for race in by_remainder[: params.count - sum(counts.values())]:
        counts[race] += 1
    return counts


def draw_face(rng: np.random.Generator, race: str, gender: int, age: int, size: int) -> Image.Image:
    """One face-like image whose tone, eyes and nose depend on race, hair on gender and age."""
    s = size / 64
    bg = tuple(int(v) for v in rng.integers(30, 220, 3))
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    light = rng.uniform(0.8, 1.2)
    skin = tuple(int(np.clip(c * light + rng.normal(0, 12), 0, 255)) for c in _SKIN[race])
    cx, cy = size / 2 + rng.normal(0, 2 * s), size / 2 + rng.normal(0, 2 * s)
    fw, fh = rng.uniform(17, 21) * s, rng.uniform(22, 26) * s
    grey = min(1.0, max(0.0, (age - 35) / 40))
    hair_base = np.array(rng.choice([[30, 20, 10], [70, 45, 20], [120, 90, 50], [20, 20, 20]]))
    hair = tuple(int(v) for v in hair_base * (1 - grey) + np.array([200, 200, 200]) * grey)
    if gender == 1:  # long hair behind the face
        draw.rectangle([cx - fw - 4 * s, cy - fh, cx + fw + 4 * s, cy + fh * 0.9], fill=hair)
    draw.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    draw.chord([cx - fw, cy - fh - 2 * s, cx + fw, cy - fh * 0.2], 180, 360, fill=hair)
    eye_h = max(1.0, 3.2 * s * _EYE_HEIGHT[race] * rng.uniform(0.85, 1.15))
    for side in (-1, 1):
        ex, ey = cx + side * fw * 0.45, cy - fh * 0.12
        draw.ellipse([ex - 3.5 * s, ey - eye_h, ex + 3.5 * s, ey + eye_h], fill=(245, 245, 245))
        draw.ellipse([ex - 1.5 * s, ey - min(eye_h, 1.5 * s), ex + 1.5 * s,
                      ey + min(eye_h, 1.5 * s)], fill=(40, 30, 20))
    nose_w = 3 * s * _NOSE_WIDTH[race] * rng.uniform(0.85, 1.15)
    shade = tuple(int(c * 0.75) for c in skin)
    draw.polygon([(cx, cy - fh * 0.05), (cx - nose_w, cy + fh * 0.28), (cx + nose_w, cy + fh * 0.28)],
                 fill=shade)
    mouth_y = cy + fh * 0.5
    draw.chord([cx - 6 * s, mouth_y - 3 * s, cx + 6 * s, mouth_y + 3 * s], 0, 180,
               fill=(150, 60, 60))
    image = image.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, fillcolor=bg)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 0.6)))
    pixels = np.asarray(image, np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ages skewed like UTKFace's: most in their 20s-30s, a tail of children and elders."""
    young = rng.integers(1, 15, n)
    adult = np.clip(rng.normal(32, 9, n), 15, 70).astype(int)
    old = rng.integers(55, 100, n)
    pick = rng.choice(3, n, p=[0.15, 0.7, 0.15])
    return np.choose(pick, [young, adult, old])


#: A temporary folder untouched for this long is left from an interrupted generation (a live
#: one writes an image every few milliseconds).
STALE_SECONDS = 10 * 60


def generate(folder: Path, params: SyntheticParams, progress) -> None:
    """Draw the images into ``folder`` atomically: into a temporary folder, then renamed.

    Processes sharing the cache take turns (a lock file next to ``folder``): the first draws,
    the others wait and reuse its images. Temporary folders left by interrupted runs are removed.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _lock(folder.parent / f".{folder.name}.lock"):
        if (folder / "generator.json").exists():  # another process drew it meanwhile
            progress.log(f"synthetic faces: reusing {folder}")
            return
        if folder.exists() and any(folder.iterdir()):
            raise FacelabError(f"{folder} exists, is not empty and was not generated by facelab "
                               "(no generator.json); choose a new or empty folder",
                               where="root" if params.root else None)
        remove_leftovers(folder, in_cache=not params.root)
        _draw(folder, params, progress)


def remove_leftovers(folder: Path, in_cache: bool) -> None:
    """Remove what interrupted generations left: this folder's temporary folders (the caller
    holds its lock, so none is in use) and, in the cache (not next to a user's ``root``),
    any temporary folder untouched for ``STALE_SECONDS`` (those of older versions included)."""
    parent = folder.parent
    for tmp in parent.glob(f".tmp-{folder.name}-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if in_cache:
        limit = time.time() - STALE_SECONDS
        for tmp in parent.glob(".tmp-*"):
            try:
                if tmp.is_dir() and tmp.stat().st_mtime < limit:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                continue


def _draw(folder: Path, params: SyntheticParams, progress) -> None:
    counts = class_counts(params)
    rng = np.random.default_rng(params.seed)
    jobs = [race for race in RACES for _ in range(counts[race])]
    rng.shuffle(jobs)
    ages, genders = _ages(rng, len(jobs)), rng.integers(0, 2, len(jobs))
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        for i in progress.track(range(len(jobs)), "generating synthetic faces", total=len(jobs)):
            race = jobs[i]
            image = draw_face(rng, race, int(genders[i]), int(ages[i]), params.size)
            name = utkface_name(int(ages[i]), int(genders[i]), RACES.index(race),
                                f"2017{i:013d}")
            image.save(tmp / name, quality=92)
        (tmp / "generator.json").write_text(json.dumps(
            {"version": GENERATOR_VERSION, **params.model_dump(mode="json")}))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "generator.json").exists():  # not "another process made it"
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), released when the block ends or the
    process dies. Without ``fcntl`` (Windows) no lock is taken: a lost race then reuses the
    winner's folder (see ``_draw``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def dataset_folder(params: SyntheticParams, cache_dir: Path) -> Path:
    """Where the images live: ``root`` if given, else a cache folder keyed by the parameters."""
    if params.root:
        return Path(params.root).expanduser().absolute()
    key = params.model_dump(mode="json", exclude={"classes", "root"})
    digest = hashlib.sha256(json.dumps([GENERATOR_VERSION, key], sort_keys=True).encode())
    return cache_dir / "synthetic" / digest.hexdigest()[:16]


def build(params: SyntheticParams, ctx) -> SampleTable:
    """Face-like images with learnable race cues, generated once in UTKFace's file layout.

    Skin tone, eye shape and nose width depend on race; hair on gender and age. Class sizes follow
    UTKFace's imbalance (White 46%, Black 21%, Asian 16%, Indian 18%, Others 8%) unless
    ``class_counts`` fixes them. Generated once per parameter set into the cache folder (or
    ``root``) and read back by the ``utkface`` loader, with its ``race`` and ``gender`` tasks.
    """
    folder = dataset_folder(params, ctx.cache_dir)
    if not (folder / "generator.json").exists():
        generate(folder, params, ctx.progress)
    else:
        ctx.progress.log(f"synthetic faces: reusing {folder}")
    return scan(folder, list(params.classes), "data.dataset")


@facelab.hookimpl
def register_datasets(register):
    register("synthetic", build, SyntheticParams,
             tasks=lambda params: utkface_tasks(params.classes), columns=EXTRA_COLUMNS,
             licence="generated by facelab: no restriction (no real person is depicted)",
             citation="facelab's synthetic faces (no publication)")
