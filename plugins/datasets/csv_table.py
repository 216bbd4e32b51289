"""Dataset ``csv``: a table of image paths and labels; one or more tasks from one file.

The module is ``csv_table`` so that it does not shadow Python's ``csv`` module.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

import facelab
from facelab.data import NO_LABEL, SPLIT_COLUMN, SampleTable, Task
from facelab.errors import FacelabError, did_you_mean
from facelab.images import image_problem
from facelab.plugins.datasets import DECLARED_TERMS, terms_field

#: Skip reasons counted in ``SampleTable.skipped`` (plus ``<task>: value ... not in classes``).
NO_PATH = "empty image path"
MISSING = "image file missing"
UNREADABLE = "unreadable image"
#: Column names the sample table reserves: a task cannot take them.
RESERVED = ("path", "source", SPLIT_COLUMN)
#: Values of a split column read without ``split_values`` (compared lower-cased).
SPLIT_NAMES = {"": "", "train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}

Split = Literal["train", "val", "test"]
RawValue = str | int | float | bool  # YAML reads 1, 1.5 and true as numbers and booleans


def raw_text(value: RawValue) -> str:
    """A recipe's raw value as the table's cell text: 1 -> "1", true -> "True"."""
    return value if isinstance(value, str) else str(value)


class CsvTable(facelab.Params):
    path: str = facelab.field(..., "the table file; relative paths are from the working directory",
                              path=True)
    split: Split | None = facelab.field(
        None, "every row of this file is in this split (null: split_column or data.split decides)")


class CsvTask(facelab.Params):
    column: str | None = facelab.field(None, "the column holding its values (default: the task's "
                                       "name)")
    classes: list[str] = facelab.field(..., "class names, in label order", min_length=2)
    map: dict[RawValue, str | None] = facelab.field(
        {}, "raw value -> class, for values that are not class names; several values may map to "
        "one class; null: no label (-1) for this task")
    edges: list[float] | None = facelab.field(
        None, "numeric column: len(classes) + 1 ascending edges, class i holding edges[i] <= value "
        "< edges[i + 1] (e.g. age in years to age groups)", min_length=3)
    unmapped: Literal["error", "drop", "no-label"] = facelab.field(
        "error", "a non-empty value that is neither a class nor mapped (nor within edges): stop "
        "with an error, drop the row (counted), or no label (-1) for this task")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        repeated = sorted({c for c in value if value.count(c) > 1})
        if repeated:
            raise ValueError(f"classes {repeated} are listed twice")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        for raw, target in self.map.items():
            if target is not None and target not in self.classes:
                known = did_you_mean(target, self.classes, what="class")
                raise ValueError(f"map: {raw!r} -> {known}")
        if self.edges is not None:
            if self.map:
                raise ValueError("map and edges exclude each other: edges bin a numeric column")
            if len(self.edges) != len(self.classes) + 1:
                raise ValueError(f"edges: {len(self.classes)} classes need {len(self.classes) + 1} "
                                 f"edges, got {len(self.edges)}")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:])) or \
                    any(math.isnan(e) for e in self.edges):
                raise ValueError(f"edges must increase, got {self.edges}")
        return self


class CsvParams(facelab.Params):
    tables: list[CsvTable] = facelab.field(
        ..., "the table files (CSV): paths, or {path, split} to predefine every row's split",
        min_length=1)
    root: str | None = facelab.field(
        None, "folder the image paths are relative to (default: the folder of each table)",
        path=True)
    path_column: str = facelab.field("path", "column holding each row's image path", min_length=1)
    tasks: dict[str, CsvTask] = facelab.field(
        ..., "task name -> {column, classes, map, edges, unmapped}; the keys of model.heads pick "
        "the trained ones, the others are label columns for evaluate.groups", min_length=1)
    split_column: str | None = facelab.field(
        None, "column saying each row's split: train, val, test or empty (the split decides)")
    split_values: dict[RawValue, Split | None] = facelab.field(
        {}, "raw value of split_column -> train, val, test or null (not predefined)")
    delimiter: str = facelab.field(",", 'field separator of the files ("\\t" for TSV)',
                                   min_length=1, max_length=1)
    licence: str | None = terms_field("licence or terms of use")
    citation: str | None = terms_field("citation")

    @field_validator("tables", mode="before")
    @classmethod
    def _paths(cls, value):
        """A bare path is ``{path: ...}``; one path alone is a list of one."""
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            return [{"path": t} if isinstance(t, str) else t for t in value]
        return value

    @field_validator("tasks")
    @classmethod
    def _not_reserved(cls, value: dict[str, CsvTask]) -> dict[str, CsvTask]:
        for name in value:
            if name in RESERVED:
                raise ValueError(f"task name {name!r} is a column of every sample table; pick "
                                 "another name (set column: to read that column)")
        return value



def csv_tasks(params: CsvParams) -> dict[str, Task]:
    """Every task of the recipe's table, from its classes: no file is read."""
    return {name: Task(name, tuple(spec.classes)) for name, spec in params.tasks.items()}


def read_table(path: Path, delimiter: str, where: str):
    """The file as a frame of stripped strings; empty cells are ``""``."""
    import pandas as pd

    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise FacelabError(f"{path} {what}; expected a CSV file of image paths and labels",
                           where=where)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=delimiter,
                            encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise FacelabError(f"cannot read {path} as a table ({reason})", where=where) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.apply(lambda column: column.str.strip())


def _column(frame, name: str, path: Path, where: str) -> None:
    if name not in frame.columns:
        raise FacelabError(f"{path}: {did_you_mean(name, frame.columns, what='column')}",
                           where=where)


def task_labels(values, spec: CsvTask, task: str, path: Path):
    """(labels with NO_LABEL for empty and null-mapped cells, mask of unmapped cells)."""
    import numpy as np
    import pandas as pd

    if spec.edges is not None:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        index = np.searchsorted(spec.edges, numbers, side="right") - 1
        inside = ~np.isnan(numbers) & (index >= 0) & (index < len(spec.classes))
        labels = np.where(inside, index, NO_LABEL)
    else:
        lookup: dict[str, int] = {c: i for i, c in enumerate(spec.classes)}
        lookup.update({raw_text(raw): NO_LABEL if target is None else spec.classes.index(target)
                       for raw, target in spec.map.items()})
        mapped = values.map(lookup)
        inside = mapped.notna().to_numpy()
        labels = mapped.fillna(NO_LABEL).to_numpy(dtype=np.int64)
    unmapped = ~inside & (values != "").to_numpy()
    if unmapped.any() and spec.unmapped == "error":
        first = values[unmapped].iloc[0]
        known = spec.classes if spec.edges is not None else \
            [*spec.classes, *(raw_text(raw) for raw in spec.map)]
        what = (f"value {first!r} is not a number within edges {spec.edges}"
                if spec.edges is not None else did_you_mean(first, known, what="value"))
        n = int(unmapped.sum())
        raise FacelabError(f"{path}: {n} row{'s' if n > 1 else ''} of column {values.name!r}: "
                           f"{what}; map it, or set tasks.{task}.unmapped: drop or no-label",
                           where=f"tasks.{task}")
    return labels.astype(np.int64), unmapped


def row_splits(frame, entry: CsvTable, params: CsvParams, path: Path):
    """Each row's predefined split: the table's, else the split column's, else ""."""
    import numpy as np

    if entry.split is not None:
        return np.full(len(frame), entry.split, dtype=object)
    if params.split_column is None:
        return np.full(len(frame), "", dtype=object)
    named = {raw_text(raw): split or "" for raw, split in params.split_values.items()}
    out = []
    for value in frame[params.split_column]:
        split = named.get(value, SPLIT_NAMES.get(value.lower()))
        if split is None:
            raise FacelabError(
                f"{path}: value {value!r} of column {params.split_column!r} is not a split; "
                "expected train, val, test or empty, or name it in split_values",
                where="split_column")
        out.append(split)
    return np.asarray(out, dtype=object)


def load(params: CsvParams, ctx) -> SampleTable:
    import numpy as np
    import pandas as pd

    root = None if params.root is None else ctx.resolve_path(params.root)
    if root is not None and not root.is_dir():
        raise FacelabError(f"folder {root} does not exist; expected the folder the table's image "
                           "paths are relative to", where="root")
    frames, skipped = [], Counter()
    for index, entry in enumerate(params.tables):
        path, where = ctx.resolve_path(entry.path), f"tables.{index}.path"
        frame = read_table(path, params.delimiter, where)
        _column(frame, params.path_column, path, "path_column")
        if params.split_column is not None and entry.split is None:
            _column(frame, params.split_column, path, "split_column")
        keep = np.ones(len(frame), dtype=bool)
        empty = (frame[params.path_column] == "").to_numpy()
        skipped[NO_PATH] += int(empty.sum())
        keep &= ~empty
        labels = {}
        for task, spec in params.tasks.items():
            column = spec.column or task
            _column(frame, column, path, f"tasks.{task}.column")
            labels[task], unmapped = task_labels(frame[column], spec, task, path)
            if spec.unmapped == "drop":
                dropped = unmapped & keep
                for value, n in Counter(frame[column].to_numpy()[dropped]).items():
                    skipped[f"{task}: value {value!r} not in classes"] += n
                keep &= ~unmapped
        splits = row_splits(frame, entry, params, path)
        base = root if root is not None else path.parent
        paths = []
        rows = np.flatnonzero(keep)
        for row in ctx.progress.track(rows, f"checking images of {path.name}", total=len(rows)):
            image = base / frame[params.path_column].iat[row]
            if not image.is_file():
                skipped[MISSING] += 1
                keep[row] = False
            elif (problem := image_problem(image)) is not None:
                skipped[problem] += 1  # UNREADABLE or "image too large: ..."
                keep[row] = False
            else:
                paths.append(str(image))
        extra = [c for c in frame.columns
                 if c not in (params.path_column, *RESERVED, *params.tasks)]
        out = frame.loc[keep, extra].copy()
        out.insert(0, "path", paths)
        for task in params.tasks:
            out[task] = labels[task][keep]
        out[SPLIT_COLUMN] = splits[keep]
        frames.append(out)
    table = pd.concat(frames, ignore_index=True).fillna("")
    if not len(table):
        found = f" (skipped: {dict(skipped)})" if skipped else ""
        raise FacelabError(f"no row has a readable image{found}; image paths are relative to "
                           f"{root or 'the folder of each table'} (set root)", where="tables")
    table["source"] = "csv"
    if params.split_column is None and all(e.split is None for e in params.tables):
        del table[SPLIT_COLUMN]
    return SampleTable(table, csv_tasks(params), Counter({k: v for k, v in skipped.items() if v}))


def build(params: CsvParams, ctx) -> SampleTable:
    """A table of image paths and labels: one or more tasks, with partial labels and splits.

    Each file of ``tables`` has a header row; ``path_column`` holds an image path relative to
    ``root`` (default: the table's folder). Each entry of ``tasks`` reads one column into a task:
    ``classes`` in label order; a cell that is a class name is that class, ``map`` turns other raw
    values into classes (several may share one; ``null`` means no label), and ``edges`` bin a
    numeric column instead (``[0, 20, 40, 60, 120]``: four age groups). A non-empty value that is
    none of these follows ``unmapped``: ``error`` (the default), ``drop`` (the row is skipped and
    counted) or ``no-label``. An empty cell, or a value mapped to ``null``, is ``-1`` for that task
    only, so one table with partial labels trains the masked multi-task loss. Tasks that no head
    trains stay as label columns, e.g. for ``evaluate.groups``; other columns are kept as text.

    Predefined splits: ``{path: ..., split: test}`` puts every row of a file in a split, and
    ``split_column`` reads each row's (``train``, ``val``, ``test``, empty for none; or as
    ``split_values`` names them). The ``stratified`` split honours them and carves validation
    from the training rows when none is predefined. Rows with an empty path, a missing image or
    an unreadable image are skipped and counted. Source name: ``csv``.

    Keys of a ``tables`` entry (or just its path): ``path``, ``split`` (``train``, ``val``,
    ``test`` or null). Keys of a ``tasks`` entry: ``column`` (default: the task's name),
    ``classes`` (required, at least two), ``map`` (raw value -> class or null), ``edges``
    (``len(classes) + 1`` increasing numbers; excludes ``map``) and ``unmapped`` (``error``,
    ``drop``, ``no-label``). How-to and FairFace: docs/own-data.md.
    """
    return load(params, ctx)


@facelab.hookimpl
def register_datasets(register):
    register("csv", build, CsvParams, tasks=csv_tasks, **DECLARED_TERMS)

