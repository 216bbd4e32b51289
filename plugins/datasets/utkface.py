"""Dataset ``utkface``: UTKFace's ``age_gender_race_timestamp.jpg.chip.jpg`` layout."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pydantic import field_validator

import facelab
from facelab import fairness
from facelab.data import NO_LABEL, SampleTable, Task
from facelab.errors import FacelabError, did_you_mean
from facelab.images import image_problem, readable  # noqa: F401 - readable: older imports

#: UTKFace's race codes, in code order.
RACES = ("white", "black", "asian", "indian", "others")
#: UTKFace's gender codes: 0 male, 1 female.
GENDERS = ("male", "female")
#: Image suffixes UTKFace releases use (aligned crops and in-the-wild images).
SUFFIXES = (".jpg.chip.jpg", ".jpg", ".png")
_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.")
#: Skip reasons counted in ``SampleTable.skipped``.
BAD_NAME, UNREADABLE = "name not in UTKFace layout", "unreadable image"


def utkface_name(age: int, gender: int, race: int, timestamp: str) -> str:
    return f"{age}_{gender}_{race}_{timestamp}.jpg.chip.jpg"


def parse_name(name: str) -> tuple[int, int, int] | None:
    """(age, gender, race) from a UTKFace file name, or None when a field is missing or bad."""
    match = _NAME.match(name)
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def scan(root: Path, classes: list[str], where: str) -> SampleTable:
    """Parse every image name below ``root``; bad names and unreadable files are counted."""
    if not root.exists():
        raise FacelabError(f"{where}.root: folder {root} does not exist; expected a folder of "
                           "UTKFace images (age_gender_race_timestamp.jpg.chip.jpg)")
    if not root.is_dir():
        raise FacelabError(f"{where}.root: {root} is not a folder")
    for name in classes:
        if name not in RACES:
            raise FacelabError(f"{where}.classes: {did_you_mean(name, RACES, what='race')}")
    rows, skipped = [], Counter()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if not path.name.lower().endswith(SUFFIXES):
            continue
        parsed = parse_name(path.name)
        if parsed is None:
            skipped[BAD_NAME] += 1
            continue
        age, gender, race = parsed
        if RACES[race] not in classes:
            skipped[f"race {RACES[race]} not in classes"] += 1
            continue
        problem = image_problem(path)  # "unreadable image" or "image too large: ..."
        if problem is not None:
            skipped[problem] += 1
            continue
        rows.append((str(path), classes.index(RACES[race]), gender, age))
    if not rows:
        found = f" (skipped: {dict(skipped)})" if skipped else ""
        raise FacelabError(f"{where}.root: no readable UTKFace images of classes {classes} in "
                           f"{root}{found}; expected files named "
                           "age_gender_race_timestamp.jpg.chip.jpg")
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["path", "race", "gender", "age"])
    frame["source"] = "utkface"
    frame["age_group"] = pd.cut(frame["age"], AGE_BINS, labels=False, right=False).fillna(NO_LABEL)
    return SampleTable(frame, utkface_tasks(classes), skipped)


def utkface_tasks(classes) -> dict[str, Task]:
    """The tasks of UTKFace-layout data: race (the chosen classes) and gender."""
    return {"race": Task("race", tuple(classes)), "gender": Task("gender", GENDERS)}


#: Edges of the ``age_group`` column: the fairness report's age groups (0-19, 20-39, 40-59, 60+).
AGE_BINS = [*(first for first, _ in fairness.AGE_BINS), 200]


#: Extra columns of the sample table, for ``evaluate.groups``.
EXTRA_COLUMNS = ("age", "age_group")

#: UTKFace's terms (its web page) and the paper to cite.
LICENCE = ("non-commercial research purposes only (UTKFace's terms); the images' copyrights "
           "stay with their owners")
CITATION = ("Zhang, Z., Song, Y., Qi, H.: Age Progression/Regression by Conditional Adversarial "
            "Autoencoder. CVPR 2017")


def check_races(classes: list[str]) -> list[str]:
    """Every class is a UTKFace race (a ValueError naming the closest otherwise)."""
    for name in classes:
        if name not in RACES:
            raise ValueError(did_you_mean(name, RACES, what="race"))
    return classes


class UtkfaceParams(facelab.Params):
    root: str = facelab.field(..., "folder holding the UTKFace images (searched recursively)",
                              path=True)
    classes: list[str] = facelab.field(["white", "black", "asian", "indian"],
                                       "races to use, in label order", min_length=2)

    @field_validator("classes")
    @classmethod
    def _races(cls, value: list[str]) -> list[str]:
        return check_races(value)


def build(params: UtkfaceParams, ctx) -> SampleTable:
    """UTKFace (Zhang et al. 2017): faces labelled with age, gender and race in the file name.

    Tasks: ``race`` (the chosen ``classes``) and ``gender`` (male, female). Extra columns: ``age``
    and ``age_group`` (0-19, 20-39, 40-59, 60+) for per-group metrics. Files whose name lacks a
    field (e.g. ``39_1_20170116174525125.jpg.chip.jpg``, no race) or that are not readable images
    (empty, truncated, not an image) are skipped and counted.
    """
    return scan(ctx.resolve_path(params.root), list(params.classes), "data.dataset")


@facelab.hookimpl
def register_datasets(register):
    register("utkface", build, UtkfaceParams, tasks=lambda params: utkface_tasks(params.classes),
             columns=EXTRA_COLUMNS, licence=LICENCE, citation=CITATION)
