"""Dataset ``folder``: images sorted into one sub-folder per class, ``root/<class>/<image>``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pydantic import field_validator

import facelab
from facelab.data import SPLIT_COLUMN, SampleTable, Task
from facelab.errors import FacelabError, did_you_mean
from facelab.images import IMAGE_SUFFIXES, image_problem
from facelab.plugins.datasets import DECLARED_TERMS, terms_field

#: Skip reasons counted in ``SampleTable.skipped``.
NOT_IMAGE = "not an image file (suffix not .jpg/.jpeg/.png/.bmp/.webp)"
UNREADABLE = "unreadable image"
OUTSIDE = "file outside the class folders"
NESTED = "in a nested folder (recursive: false)"
#: Column names the sample table reserves: a task cannot take them.
RESERVED = ("path", "source", SPLIT_COLUMN)


class FolderParams(facelab.Params):
    root: str = facelab.field(..., "folder holding one sub-folder of images per class",
                              path=True)
    task: str = facelab.field("label", "the task's name: the key of model.heads that trains it",
                              min_length=1)
    classes: list[str] | None = facelab.field(
        None, "which sub-folders are classes, in label order (default: every sub-folder, sorted)",
        min_length=2)
    recursive: bool = facelab.field(False, "also read images in folders nested in a class folder")
    licence: str | None = terms_field("licence or terms of use")
    citation: str | None = terms_field("citation")

    @field_validator("task")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED:
            raise ValueError(f"{value!r} is a column of every sample table; pick another name")
        return value

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            repeated = sorted({c for c in value if value.count(c) > 1})
            if repeated:
                raise ValueError(f"classes {repeated} are listed twice")
        return value


def _visible(path: Path | str) -> bool:
    return not Path(path).name.startswith(".")


def check_root(root: Path) -> None:
    if not root.exists():
        raise FacelabError(f"folder {root} does not exist; expected one sub-folder of images per "
                           "class (root/<class>/<image>)", where="root")
    if not root.is_dir():
        raise FacelabError(f"{root} is not a folder; expected one sub-folder of images per class "
                           "(root/<class>/<image>)", where="root")


def class_folders(root: Path, classes: list[str] | None) -> list[str]:
    """The class sub-folders, in label order: ``classes`` (checked), else every one, sorted."""
    check_root(root)
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if classes is None:
        if len(found) < 2:
            names = f" ({', '.join(found)})" if found else ""
            raise FacelabError(f"found {len(found)} class folder{names} in {root}; expected at "
                               "least two sub-folders, one per class (root/<class>/<image>)",
                               where="root")
        return found
    for name in classes:
        if name not in found:
            raise FacelabError(f"{did_you_mean(name, found, what='class folder')} in {root}",
                               where="classes")
    return list(classes)


def folder_tasks(params: FolderParams) -> dict[str, Task]:
    """The task, from ``classes`` without touching the disk, else from the sub-folder names."""
    classes = params.classes
    if classes is None:
        from facelab.context import BuildContext  # resolves paths as the factory's ctx does

        classes = class_folders(BuildContext(Path(".")).resolve_path(params.root), None)
    return {params.task: Task(params.task, tuple(classes))}


def _files(folder: Path, recursive: bool) -> tuple[list[Path], int]:
    """(visible files to read, files in nested folders left out), sorted."""
    files, nested = [], 0
    for path in sorted(folder.rglob("*")):
        if not all(_visible(part) for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if path.parent == folder or recursive:
            files.append(path)
        else:
            nested += 1
    return files, nested


def scan(root: Path, task: str, classes: list[str] | None, recursive: bool) -> SampleTable:
    """One row per readable image of a class folder; everything else is counted as skipped."""
    names = class_folders(root, classes)
    rows, skipped = [], Counter()
    for path in sorted(root.iterdir()):
        if not _visible(path):
            continue
        if path.is_file():
            skipped[OUTSIDE] += 1
        elif path.is_dir() and path.name not in names:
            files, nested = _files(path, recursive)
            skipped[f"folder {path.name} not in classes"] += len(files) + nested
    for label, name in enumerate(names):
        files, nested = _files(root / name, recursive)
        if nested:
            skipped[NESTED] += nested
        found = Counter()
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                found[NOT_IMAGE] += 1
            elif (problem := image_problem(path)) is not None:
                found[problem] += 1  # UNREADABLE or "image too large: ..."
            else:
                rows.append((str(path), label))
                found["image"] += 1
        if not found["image"]:
            why = f" (skipped: {dict(found)})" if found else ""
            hint = "; images in nested folders need recursive: true" if nested else ""
            raise FacelabError(f"class folder {root / name} has no readable image{why}{hint}; "
                               "every class needs images", where="root")
        del found["image"]
        skipped.update(found)
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["path", task])
    frame["source"] = "folder"
    return SampleTable(frame, {task: Task(task, tuple(names))},
                       Counter({k: v for k, v in skipped.items() if v}))


def build(params: FolderParams, ctx) -> SampleTable:
    """Your own images, sorted into one sub-folder per class (root/<class>/<image>).

    One task, named ``task`` (default ``label``: the key of ``model.heads`` that trains it), whose
    classes are ``classes`` in that order (only those sub-folders are read), else every sub-folder
    of ``root``, sorted by name. Images are ``.jpg``, ``.jpeg``, ``.png``, ``.bmp`` and ``.webp``
    files, in any case; with ``recursive: true`` those in folders nested in a class folder count
    too. Other files, unreadable images (empty, truncated, not an image), files directly in
    ``root``, files in nested folders (without ``recursive``) and files of sub-folders left out of
    ``classes`` are skipped and counted; hidden files and folders (``.name``) are ignored. Fewer
    than two classes, or a class folder without a readable image, is an error. No split is
    predefined: ``data.split`` carves validation and test.
    """
    return scan(ctx.resolve_path(params.root), params.task,
                None if params.classes is None else list(params.classes), params.recursive)


@facelab.hookimpl
def register_datasets(register):
    register("folder", build, FolderParams, tasks=folder_tasks, columns=(), **DECLARED_TERMS)
