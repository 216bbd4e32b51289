"""Split and balance: per-source stratified train/validation/test, then a balance plan.

Every split is a :class:`BalancePlan` over the cropped images, so train, validation and test are
handled alike whether or not they hold synthetic rows.

- ``protocol: sound`` (default): test, then validation, are split off; only train is balanced.
  Validation and test never contain synthetic samples.
- ``protocol: paper`` (the race paper): test is split off, the rest is balanced, then validation
  is taken from the balanced set, so it contains synthetic samples as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from facelab.data import NO_LABEL, BalancePlan, Balancer, RowSubset, SampleTable
from facelab.errors import FacelabError
from facelab.recipe import SourceSplit, SplitSpec

SPLITS = ("train", "val", "test")


@dataclass
class Splits:
    """Plans over the cropped images for each split."""

    plans: dict[str, BalancePlan]
    #: rows of ``train`` before balancing (global image indices)
    train_rows: np.ndarray


def _size(value: float | int, n: int, where: str) -> int:
    """A share as a count: fractions (0-1) of ``n``, or absolute counts."""
    if isinstance(value, float) and value < 1:
        return int(round(value * n)) if value > 0 else 0
    count = int(value)
    if count >= n:
        raise FacelabError(f"{where}: asks for {count} samples but only {n} are available")
    return count


def _carve(rows: np.ndarray, strata: np.ndarray, size: int, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (rest, carved) with ``size`` carved rows, stratified when possible."""
    if size == 0:
        return rows, rows[:0]
    _, counts = np.unique(strata, return_counts=True)
    stratify = strata if counts.min() >= 2 and size >= len(counts) else None
    rest, carved = train_test_split(rows, test_size=size, stratify=stratify, random_state=seed)
    return np.sort(rest), np.sort(carved)


def _strata(table: SampleTable, rows: np.ndarray, preferred: str, tasks: list[str]) -> np.ndarray:
    """Labels to stratify a source on: the preferred task if the source labels it, else the first
    task it labels."""
    for task in (preferred, *tasks):
        labels = table.frame[task].to_numpy()[rows]
        if (labels != NO_LABEL).any():
            return labels
    return np.zeros(len(rows), np.int64)


def split_and_balance(table: SampleTable, images: np.ndarray, spec: SplitSpec, tasks: list[str],
                      stratify: str, balance_on: str, balancer: Balancer, seed: int) -> Splits:
    """Split every source, then balance according to ``spec.protocol``."""
    seed = spec.seed if spec.seed is not None else seed
    sources = table.frame["source"].to_numpy()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for source in dict.fromkeys(sources):
        rows = np.flatnonzero(sources == source)
        share: SourceSplit = spec.by_source.get(source, spec)
        where = f"data.split.by_source.{source}" if source in spec.by_source else "data.split"
        strata = _strata(table, rows, stratify, tasks)
        pool, test = _carve(rows, strata, _size(share.test, len(rows), f"{where}.test"), seed)
        parts["test"].append(test)
        if spec.protocol == "paper":
            parts["train"].append(pool)  # validation is carved after balancing
            continue
        train, val = _carve(pool, _strata(table, pool, stratify, tasks),
                            _size(share.val, len(pool), f"{where}.val"), seed)
        if share.train is not None and share.train < len(train):
            _, train = _carve(train, _strata(table, train, stratify, tasks), share.train, seed)
        parts["val"].append(val)
        parts["train"].append(train)
    train_rows, test_rows = np.concatenate(parts["train"]), np.concatenate(parts["test"])
    val_rows = np.concatenate(parts["val"]) if parts["val"] else np.empty(0, np.int64)

    labels = table.frame[balance_on].to_numpy()
    train_plan = _balance(images, labels, train_rows, balancer, seed)
    if spec.protocol == "paper":
        plan_labels = labels[train_plan.base]
        val_size = _size(spec.val, len(train_plan), "data.split.val")
        keep, val = _carve(np.arange(len(train_plan)), plan_labels, val_size, seed)
        val_plan, train_plan = train_plan.take(val), train_plan.take(keep)
    else:
        val_plan = BalancePlan.of_rows(val_rows)
    test_plan = BalancePlan.of_rows(test_rows)
    return Splits({"train": train_plan, "val": val_plan, "test": test_plan}, train_rows)


def _balance(images: np.ndarray, labels: np.ndarray, rows: np.ndarray, balancer: Balancer,
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
