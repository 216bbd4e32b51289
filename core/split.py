"""Splitting and balancing: the contract of split components and the helpers they share.

A split component (``data.split: {type: ...}``, hook ``register_splits``) turns the kept sample
table into a :class:`BalancePlan` per split. Every split is a plan over the cropped images, so
train, validation and test are handled alike whether or not they hold synthetic rows. The
built-in ``stratified`` split carves test, then validation, per source, and balances only what
is left for training; other protocols (a paper's) may balance first and carve validation after.
A dataset may predefine the split of some rows (the ``SPLIT_COLUMN`` of the sample table, read
with :func:`predefined`); a split component honours it or says it cannot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facelab.data import (NO_LABEL, PREDEFINED, SPLIT_COLUMN, BalancePlan, Balancer, RowSubset,
                          SampleTable)
from facelab.errors import FacelabError
from facelab.params import Params, field

SPLITS = ("train", "val", "test")

Count = int | float  # a fraction in (0, 1) or an absolute number of samples


class SourceSplit(Params):
    """How one source is split; fractions are of the whole source (test) or of what is left (val)."""

    test: Count = field(0.2, "test share: a fraction (0-1) of the source, or a count", ge=0)
    val: Count = field(0.1, "validation share: a fraction of what remains after test, or a count",
                       ge=0)
    train: int | None = field(None, "use at most this many training samples (None: all)", ge=1)


class SplitParams(SourceSplit):
    """Parameters every split component shares (subclass it to add more)."""

    stratify: str | None = field(None, "task to stratify on (default: the first head's task)")
    seed: int | None = field(None, "split seed (default: the recipe's seed)", ge=0)
    by_source: dict[str, SourceSplit] = field(
        {}, "per-source overrides of test/val/train, keyed by data.datasets name")


@dataclass
class Splits:
    """Plans over the cropped images for each split."""

    plans: dict[str, BalancePlan]
    #: rows of ``train`` before balancing (global image indices)
    train_rows: np.ndarray


@dataclass(frozen=True)
class SplitRequest:
    """What the pipeline hands a split component."""

    table: SampleTable          # kept rows, aligned with ``images``
    images: np.ndarray          # (N, H, W, C) uint8 crops
    tasks: list[str]            # the trained tasks (keys of model.heads)
    stratify: str               # the task to stratify on
    balance_on: str             # the task whose classes the balancer evens out
    balancer: Balancer
    seed: int                   # the split's seed (its own, else the recipe's)

    def balance(self, rows: np.ndarray) -> BalancePlan:
        """Balance the labelled ``rows`` on ``balance_on``; unlabelled rows are kept once."""
        return balance(self.images, self.table.frame[self.balance_on].to_numpy(), rows,
                       self.balancer, self.seed)


class Splitter(Protocol):
    """Splits and balances. See ``hookspecs.register_splits``."""

    def split(self, request: SplitRequest) -> Splits:
        """A plan per split (train, val, test) and the training rows before balancing."""


def size(value: float | int, n: int, where: str) -> int:
    """A share as a count: fractions (0-1) of ``n``, or absolute counts."""
    if isinstance(value, float) and value < 1:
        return int(round(value * n)) if value > 0 else 0
    count = int(value)
    if count >= n:
        raise FacelabError(f"{where}: asks for {count} samples but only {n} are available")
    return count


def carve(rows: np.ndarray, strata: np.ndarray, count: int, seed: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (rest, carved) with ``count`` carved rows, stratified when possible."""
    from sklearn.model_selection import train_test_split

    if count == 0:
        return rows, rows[:0]
    _, counts = np.unique(strata, return_counts=True)
    stratify = strata if counts.min() >= 2 and count >= len(counts) else None
    rest, carved = train_test_split(rows, test_size=count, stratify=stratify, random_state=seed)
    return np.sort(rest), np.sort(carved)


def strata(table: SampleTable, rows: np.ndarray, preferred: str, tasks: list[str]) -> np.ndarray:
    """Labels to stratify a source on: the preferred task if the source labels it, else the first
    task it labels."""
    for task in (preferred, *tasks):
        labels = table.frame[task].to_numpy()[rows]
        if (labels != NO_LABEL).any():
            return labels
    return np.zeros(len(rows), np.int64)


def predefined(table: SampleTable) -> np.ndarray:
    """Every row's predefined split (``train``, ``val``, ``test``), ``""`` where the split
    component decides; all ``""`` when the table has no ``SPLIT_COLUMN``."""
    frame = table.frame
    if SPLIT_COLUMN not in frame.columns:
        return np.full(len(frame), "", dtype=object)
    values = frame[SPLIT_COLUMN].fillna("").astype(str).to_numpy(dtype=object)
    bad = sorted(set(values) - {"", *PREDEFINED})
    if bad:
        raise FacelabError(f"data: the sample table's {SPLIT_COLUMN!r} column holds {bad[:3]}; "
                           "expected train, val, test or empty (the dataset sets it)")
    return values


def per_source(request: SplitRequest, params: SplitParams,
               split_source: Callable[[np.ndarray, SourceSplit, str], dict[str, np.ndarray]]
               ) -> dict[str, np.ndarray]:
    """Call ``split_source(rows, share, where)`` for every source's rows and concatenate its
    ``{split: rows}`` answers, so every source is split by its own shares (``by_source``)."""
    sources = request.table.frame["source"].to_numpy()
    parts: dict[str, list[np.ndarray]] = {}
    for source in dict.fromkeys(sources):
        rows = np.flatnonzero(sources == source)
        share: SourceSplit = params.by_source.get(source, params)
        where = f"data.split.by_source.{source}" if source in params.by_source else "data.split"
        for split, chosen in split_source(rows, share, where).items():
            parts.setdefault(split, []).append(chosen)
    return {split: np.concatenate(chunks) for split, chunks in parts.items()}


def balance(images: np.ndarray, labels: np.ndarray, rows: np.ndarray, balancer: Balancer,
            seed: int) -> BalancePlan:
    """Balance the labelled ``rows`` on ``labels``; unlabelled rows are kept once as they are."""
    labelled = rows[labels[rows] != NO_LABEL]
    unlabelled = rows[labels[rows] == NO_LABEL]
    if len(labelled) == 0:
        return BalancePlan.of_rows(rows)
    local = balancer.plan(RowSubset(images, labelled), labels[labelled], seed)
    base = np.concatenate([labelled[local.base], unlabelled])
    neighbour = np.concatenate([labelled[local.neighbour], unlabelled])
    step = np.concatenate([local.step, np.zeros(len(unlabelled), local.step.dtype)])
    return BalancePlan(base, neighbour, step)
