"""The data model shared by the core and the plugins: tasks, the sample table, plans."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from facelab.errors import FacelabError

if TYPE_CHECKING:  # pandas is imported where a table is built (importing it takes ~0.5 s)
    import pandas as pd

#: Label value meaning "this sample has no label for this task".
NO_LABEL = -1

#: Optional sample-table column: the split a dataset predefines for a row (``PREDEFINED``), or
#: ``""`` when the split component decides. Split components honour it (see ``stratified``).
SPLIT_COLUMN = "split"
#: The values of ``SPLIT_COLUMN`` other than ``""``.
PREDEFINED = ("train", "val", "test")


@dataclass(frozen=True)
class Task:
    """A classification task: a label column of the sample table and its class names."""

    name: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class SampleTable:
    """One row per image.

    ``frame`` columns: ``path`` (str), ``source`` (str), one int column per task in ``tasks``
    (``NO_LABEL`` where unlabelled), optionally ``SPLIT_COLUMN`` (a predefined split per row) and
    any extra columns a dataset keeps (e.g. ``age``).
    ``skipped`` counts the files left out while loading, by reason.
    """

    frame: pd.DataFrame
    tasks: dict[str, Task]
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        missing = {"path", "source", *self.tasks} - set(self.frame.columns)
        if missing:
            raise ValueError(f"sample table lacks columns {sorted(missing)}")
        self.frame = self.frame.reset_index(drop=True)
        for name in self.tasks:
            self.frame[name] = self.frame[name].astype(np.int64)

    def __len__(self) -> int:
        return len(self.frame)

    def class_counts(self, task: str) -> dict[str, int]:
        """Labelled samples per class name, in class order."""
        labels = self.frame[task].to_numpy()
        return {c: int((labels == i).sum()) for i, c in enumerate(self.tasks[task].classes)}

    @staticmethod
    def merge(tables: dict[str, SampleTable]) -> SampleTable:
        """Stack sources into one table; a task a source lacks gets ``NO_LABEL``."""
        import pandas as pd

        tasks: dict[str, Task] = {}
        for source, table in tables.items():
            for name, task in table.tasks.items():
                if name in tasks and tasks[name].classes != task.classes:
                    raise FacelabError(
                        f"data.datasets.{source}: task {name!r} has classes {list(task.classes)}, "
                        f"but another source has {list(tasks[name].classes)}; expected the same")
                tasks[name] = task
        frames, skipped = [], Counter()
        for source, table in tables.items():
            frame = table.frame.copy()
            frame["source"] = source
            for name in tasks:
                if name not in frame.columns:
                    frame[name] = NO_LABEL
            frames.append(frame)
            skipped.update({f"{source}: {reason}": n for reason, n in table.skipped.items()})
        merged = pd.concat(frames, ignore_index=True)
        if SPLIT_COLUMN in merged.columns:  # sources without predefined splits: not predefined
            merged[SPLIT_COLUMN] = merged[SPLIT_COLUMN].fillna("")
        return SampleTable(merged, tasks, skipped)


@dataclass(frozen=True)
class Detection:
    """A detector's answer for one image: the crop (uint8, ``output_shape``) or None to drop it.

    ``box`` (x, y, width, height in the original image's pixels) and ``confidence`` (the
    detector's score) are optional: ``detect_all`` fills them in where the detector knows them;
    the crop stage of training does not use them.
    """

    crop: np.ndarray | None
    status: str  # e.g. "face", "no face: whole image kept", "no face: dropped"
    box: tuple[int, int, int, int] | None = None
    confidence: float | None = None


class Detector(Protocol):
    """Turns decoded images into fixed-size crops. See ``hookspecs.register_detectors``."""

    #: (height, width, channels) of every crop.
    output_shape: tuple[int, int, int]
    #: how many same-size images to pass to ``detect`` at once.
    batch_size: int

    def cache_key(self) -> dict[str, Any]:
        """Everything that changes a crop (parameters and model version), JSON-serialisable."""

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        """Crops for same-size RGB uint8 images of shape (H, W, 3)."""

    # Optional (``facelab predict`` uses it when present, else ``detect([image])``):
    #
    # def detect_all(self, image: np.ndarray) -> list[Detection]:
    #     """Every face in one RGB uint8 image, each cropped exactly as ``detect`` crops, with
    #     ``box`` and ``confidence`` where known; an empty list when nothing is kept."""


@dataclass(frozen=True)
class BalancePlan:
    """Rows of a balanced training set, each ``x[base] + step * (x[neighbour] - x[base])``.

    Original rows are ``(i, i, 0.0)``. Labels are those of ``base``. Synthesis happens lazily, a
    batch at a time, so the balanced set never sits in memory as float32.
    """

    base: np.ndarray
    neighbour: np.ndarray
    step: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.base) == len(self.neighbour) == len(self.step)):
            raise ValueError("base, neighbour and step must have equal lengths")

    def __len__(self) -> int:
        return len(self.base)

    @staticmethod
    def identity(n: int) -> BalancePlan:
        return BalancePlan.of_rows(np.arange(n, dtype=np.int64))

    @staticmethod
    def of_rows(rows: np.ndarray) -> BalancePlan:
        """``rows`` once each, unchanged (no synthetic samples)."""
        return BalancePlan(rows, rows.copy(), np.zeros(len(rows), np.float32))

    @property
    def synthetic(self) -> np.ndarray:
        """Boolean mask of synthesised rows."""
        return (self.base != self.neighbour) & (self.step != 0)

    def take(self, rows: np.ndarray) -> BalancePlan:
        return BalancePlan(self.base[rows], self.neighbour[rows], self.step[rows])

    def materialize(self, features: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """float32 samples for ``rows`` of the plan (all by default)."""
        base = features[self.base[rows]].astype(np.float32)
        neighbour = features[self.neighbour[rows]].astype(np.float32)
        step = self.step[rows].reshape((-1,) + (1,) * (features.ndim - 1))
        # imblearn's order of operations and precisions (float32 difference, float64 step,
        # result cast to float32), so synthesised rows equal imblearn's bit for bit.
        return (base + step * (neighbour - base)).astype(np.float32)


class RowSubset:
    """Rows of an array, indexed lazily: the training features a balancer sees, without copying
    the uint8 images (2.4 GB at the race paper's scale).

    Supports what balancers use: ``len``, ``shape``, ``dtype``, ``ndim``, ``reshape(n, -1)`` and
    indexing by row numbers; ``np.asarray`` makes the copy for code that needs a real array.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows = array, np.asarray(rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        return self.array[self.rows[index]]

    def reshape(self, n: int, *shape: int) -> RowSubset:
        if n != len(self.rows):
            raise ValueError(f"cannot reshape {len(self.rows)} rows into {n}")
        return RowSubset(self.array.reshape(len(self.array), *shape), self.rows)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        rows = self.array[self.rows]
        return rows if dtype is None else rows.astype(dtype)


class Balancer(Protocol):
    """Plans a class-balanced training set. See ``hookspecs.register_balancers``."""

    def plan(self, features: np.ndarray, labels: np.ndarray, seed: int) -> BalancePlan:
        """``features``: (N, ...) array or :class:`RowSubset`, any dtype, not to be copied whole to
        float; ``labels``: (N,) int."""


@dataclass
class LossSpec:
    """What a loss plugin gives the trainer: a Keras loss per task, weights, a model hook."""

    losses: dict[str, Any]
    weights: dict[str, float] | None = None
    #: called once on the built model before compiling (e.g. to attach weight regularisers)
    prepare_model: Callable[[Any], None] | None = None
