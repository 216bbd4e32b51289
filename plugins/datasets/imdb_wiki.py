"""Dataset ``imdb-wiki``: IMDB-WIKI face crops (Rothe et al.) from ``imdb.mat`` / ``wiki.mat``.

The metadata is a MATLAB struct with one entry per image; it is read with ``scipy.io.loadmat``
and filtered with numpy (the IMDB file has 460,723 entries). Images are not opened here: the
table holds paths only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

import facelab
from facelab.data import SampleTable, Task
from facelab.errors import FacelabError

#: Struct fields the loader needs (the files also hold name, face_location, celeb_names, ...).
FIELDS = ("full_path", "dob", "photo_taken", "gender", "face_score", "second_face_score")
#: ``gender`` classes in label order; the .mat codes 1 male, 0 female (as UTKFace's 0 male, 1 female).
GENDERS = ("male", "female")
#: The paper's six age groups (section 4.1), inclusive bounds.
AGE_GROUPS = ((0, 15), (16, 25), (26, 35), (36, 45), (46, 60), (61, 100))
AGE_CLASSES = tuple(f"{lo}-{hi}" for lo, hi in AGE_GROUPS)
#: MATLAB datenum of 1970-01-01 (datenum counts days from the year 0; day 367 is 0001-01-01).
DATENUM_EPOCH = 719529

# Skip reasons, in the order they are tested; a row is counted under the first that applies.
NO_FACE = "no face (face_score -inf)"
SECOND_FACE = "second face present"
NO_GENDER = "gender unknown (NaN)"
BAD_DOB = "invalid date of birth"
BAD_AGE = "age outside 0-100"
LOW_SCORE = "face_score below min_face_score"
MISSING = "image file missing"
NOT_SAMPLED = "left out by limit (random sample)"


class ImdbWikiParams(facelab.Params):
    subset: Literal["imdb", "wiki"] = facelab.field(
        "imdb", "which metadata file: imdb (imdb_crop/imdb.mat) or wiki (wiki_crop/wiki.mat)")
    root: str = facelab.field(
        ..., "the <subset>_crop folder (holding <subset>.mat and 00..99/), its parent, or the .mat",
        path=True)
    min_face_score: float | None = facelab.field(
        None, "drop faces whose detector score is below this (None: keep every detected face)")
    limit: int | None = facelab.field(
        None, "keep a random sample of at most this many rows after filtering (None: all)", ge=1)
    seed: int = facelab.field(0, "seed of the limit's random sample", ge=0)
    check_files: bool = facelab.field(
        True, "skip and count rows whose image file is missing (one stat per filtered row)")


def find_mat(root: Path, subset: str) -> tuple[Path, Path]:
    """(the .mat file, the folder its ``full_path`` entries are relative to)."""
    if root.is_file():
        if root.suffix.lower() != ".mat":
            raise FacelabError(f"imdb-wiki: root {root} is a {root.suffix or 'suffix-less'} file; "
                               f"expected the {subset}_crop folder or its {subset}.mat")
        return root, root.parent
    for folder in (root, root / f"{subset}_crop"):
        if (folder / f"{subset}.mat").is_file():
            return folder / f"{subset}.mat", folder
    raise FacelabError(f"imdb-wiki: {subset}.mat not found in {root} or {root / f'{subset}_crop'}; "
                       f"expected the extracted {subset}_crop.tar (set subset: imdb or wiki)")


def read_struct(path: Path, subset: str) -> dict[str, np.ndarray]:
    """The needed fields of the .mat's ``<subset>`` struct as flat numpy arrays."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=[subset])
    except NotImplementedError:  # scipy's answer to MATLAB v7.3 (HDF5) files
        raise FacelabError(f"imdb-wiki: {path} is a MATLAB v7.3 file; expected the original "
                           "IMDB-WIKI .mat (v5/v7), as distributed") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises ValueError, MatReadError, OSError, ...
        raise FacelabError(f"imdb-wiki: {path} is not a readable MATLAB .mat file ({exc})") from None
    if subset not in mat:
        raise FacelabError(f"imdb-wiki: {path} holds no variable {subset!r}; expected the "
                           f"{subset} struct of {subset}.mat (is subset right?)")
    struct = mat[subset]
    names = struct.dtype.names or ()
    missing = [f for f in FIELDS if f not in names]
    if missing or struct.size != 1:
        raise FacelabError(f"imdb-wiki: {path}: struct {subset!r} lacks fields {missing}; expected "
                           f"a 1x1 struct with {', '.join(FIELDS)}")
    record = struct.flat[0]
    out = {name: np.asarray(record[name]).ravel() for name in FIELDS}
    # full_path is a cell array: an object array of 1-element string arrays. Concatenating them is
    # one C-level pass; an empty cell would shorten the result, which we treat as a broken file.
    cells = out["full_path"]
    try:
        paths = np.concatenate(cells) if len(cells) else np.array([], dtype=str)
    except ValueError:
        paths = np.array([])
    lengths = {name: len(v) for name, v in out.items() if name != "full_path"}
    if len(paths) != len(cells) or len(set(lengths.values()) | {len(cells)}) != 1:
        raise FacelabError(f"imdb-wiki: {path}: fields have different lengths or empty full_path "
                           f"entries ({len(cells)} paths, {lengths}); expected one entry per image")
    out["full_path"] = paths.astype(str)
    for name in FIELDS[1:]:
        try:
            out[name] = out[name].astype(np.float64)
        except (TypeError, ValueError):
            raise FacelabError(f"imdb-wiki: {path}: field {name!r} is not numeric") from None
    return out


def birth_dates(dob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid, year, month) for MATLAB datenums, vectorised through numpy's datetime64."""
    valid = np.isfinite(dob) & (dob >= 367) & (dob < 3_652_425)  # years 1 to 9999
    days = np.where(valid, np.floor(np.nan_to_num(dob)) - DATENUM_EPOCH, 0).astype(np.int64)
    dates = days.astype("datetime64[D]")
    year = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return valid, year, month


def ages(dob: np.ndarray, photo_taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid, age in years) with the dataset authors' convention.

    The photo's date is only known to the year, so it is taken as mid-year (1 July): the age is
    ``photo_taken - birth year``, minus one for people born in July to December, whose birthday
    had not yet come by then. This is the rule of the DEX reference code (Rothe et al.).
    """
    valid, year, month = birth_dates(dob)
    age = photo_taken - year - (month >= 7)
    return valid & np.isfinite(photo_taken), np.where(valid, age, -1).astype(np.int64)


def age_group(age: np.ndarray) -> np.ndarray:
    """Index into ``AGE_GROUPS`` for ages in 0-100."""
    return np.digitize(age, [lo for lo, _ in AGE_GROUPS[1:]])


def load(params: ImdbWikiParams, root: Path) -> SampleTable:
    import pandas as pd

    mat_path, image_root = find_mat(root, params.subset)
    fields = read_struct(mat_path, params.subset)
    valid_dob, age = ages(fields["dob"], fields["photo_taken"])
    score, gender = fields["face_score"], fields["gender"]
    checks = [
        (NO_FACE, ~(score > -np.inf)),
        (SECOND_FACE, ~np.isnan(fields["second_face_score"])),
        (NO_GENDER, ~np.isin(gender, (0.0, 1.0))),
        (BAD_DOB, ~valid_dob),
        (BAD_AGE, (age < 0) | (age > 100)),
    ]
    if params.min_face_score is not None:
        checks.append((LOW_SCORE, score < params.min_face_score))
    reasons = np.select([mask for _, mask in checks], list(range(len(checks))), default=-1)
    skipped = Counter({checks[i][0]: int(n) for i, n in enumerate(np.bincount(
        reasons[reasons >= 0], minlength=len(checks))) if n})
    keep = np.flatnonzero(reasons < 0)

    frame = pd.DataFrame({
        "path": np.char.add(str(image_root) + "/", fields["full_path"][keep]),
        "source": params.subset,
        "gender": (1 - gender[keep]).astype(np.int64),  # .mat: 1 male, 0 female
        "age": age_group(age[keep]),
        "age_years": age[keep],
        "face_score": score[keep],
    })
    if params.check_files:
        exists = np.fromiter((Path(p).is_file() for p in frame["path"]), bool, len(frame))
        if not exists.all():
            skipped[MISSING] = int((~exists).sum())
            frame = frame[exists]
    if params.limit is not None and len(frame) > params.limit:
        chosen = np.sort(np.random.default_rng(params.seed).choice(len(frame), params.limit,
                                                                   replace=False))
        skipped[NOT_SAMPLED] = len(frame) - params.limit
        frame = frame.iloc[chosen]
    if frame.empty:
        raise FacelabError(f"imdb-wiki: no usable image in {mat_path} "
                           f"(skipped: {dict(skipped) or 'none'})")
    return SampleTable(frame, tasks(params), skipped)


def tasks(params: ImdbWikiParams) -> dict[str, Task]:
    return {"gender": Task("gender", GENDERS), "age": Task("age", AGE_CLASSES)}


def build(params: ImdbWikiParams, ctx) -> SampleTable:
    """IMDB-WIKI (Rothe et al. 2016): celebrity faces with gender and age, from the .mat metadata.

    Reads ``imdb_crop/imdb.mat`` or ``wiki_crop/wiki.mat`` (``subset``); image paths are the
    struct's ``full_path`` below that folder. Tasks: ``gender`` (male, female) and ``age`` in the
    multi-task paper's six groups 0-15, 16-25, 26-35, 36-45, 46-60, 61-100. Age is
    ``photo_taken`` minus the birth year from ``dob`` (a MATLAB datenum), minus one for births in
    July-December (the photo is taken as mid-year, as in the dataset's reference code). Skipped
    and counted: no face (score -inf), a second face, unknown gender, an invalid birth date, an
    age outside 0-100, a face score below ``min_face_score``, a missing file, and rows beyond
    ``limit`` (a seeded random sample). Extra columns: ``age_years``, ``face_score``.
    """
    return load(params, ctx.resolve_path(params.root))


@facelab.hookimpl
def register_datasets(register):
    register("imdb-wiki", build, ImdbWikiParams, tasks=tasks, columns=("age_years", "face_score"),
             licence="non-commercial (academic) research purposes only (IMDB-WIKI's terms); the "
                     "images' copyrights stay with their owners",
             citation="Rothe, R., Timofte, R., Van Gool, L.: Deep expectation of real and "
                      "apparent age from a single image without facial landmarks. IJCV 2018")
