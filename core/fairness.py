"""Fairness with uncertainty: accuracy, per-class recall (true positive rate) and false positive
rate for every group and intersection of groups, each with a bootstrap interval and its count.

Groups come from columns of the sample table: the task's true class, the recipe's
``evaluate.groups``, the dataset's other tasks (their labels) and a numeric age in years (cut
into :data:`AGE_BINS`). Groups smaller than ``min_group_size`` are flagged, not ranked.

The bootstrap resamples each group's rows with replacement. Every metric here is a function of
the group's confusion matrix, and resampling n rows with replacement draws that matrix from a
multinomial over its cells (cell counts / n); so one ``Generator.multinomial`` call per group
gives all its resamples at once, exactly the distribution of row resampling, at the cost of
the matrix's size instead of n. No library computes per-group intervals of this kind
(scipy.stats.bootstrap resamples rows one statistic at a time; fairlearn's MetricFrame has no
intervals), hence this module. Intervals are percentile intervals of the resamples.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from itertools import combinations, product
from typing import TYPE_CHECKING

import numpy as np

from facelab.data import NO_LABEL, Task
from facelab.results import Estimate, GroupFairness, GroupGap, TaskFairness

if TYPE_CHECKING:
    import pandas as pd

#: Age groups for numeric ages in years: (first, last) year, ``None`` = and older.
AGE_BINS: tuple[tuple[int, int | None], ...] = ((0, 19), (20, 39), (40, 59), (60, None))
#: Columns read as ages in years (when they are numeric and not a task): cut into AGE_BINS.
AGE_COLUMNS = ("age", "age_years")
#: A group column with more distinct values than this (other than an age) is left out.
MAX_LEVELS = 16
#: The interval's coverage.
CONFIDENCE = 0.95


def age_bin_names() -> list[str]:
    """``0-19``, ``20-39``, ``40-59``, ``60+``."""
    return [f"{lo}-{hi}" if hi is not None else f"{lo}+" for lo, hi in AGE_BINS]


def age_groups(years: np.ndarray) -> np.ndarray:
    """The :data:`AGE_BINS` name of each age in years; ``""`` for a missing or negative age."""
    years = np.asarray(years, dtype=np.float64)
    edges = [lo for lo, _ in AGE_BINS[1:]]
    names = np.array(age_bin_names(), dtype=object)
    out = names[np.clip(np.digitize(np.nan_to_num(years, nan=-1.0), edges), 0, len(names) - 1)]
    out[~(years >= 0)] = ""
    return out


def group_columns(task: str, requested: Sequence[str], tasks: dict[str, Task],
                  available: Sequence[str]) -> list[str]:
    """The task's own column, the recipe's ``evaluate.groups``, the table's other tasks, and
    a numeric age column when no column about age is among them yet; only columns the table
    has, each once."""
    chosen = [c for c in dict.fromkeys([task, *requested, *tasks]) if c in available]
    if not any(c.startswith("age") for c in chosen):
        chosen += [c for c in AGE_COLUMNS if c in available][:1]
    return chosen


def group_values(frame: pd.DataFrame, column: str, tasks: dict[str, Task]
                 ) -> tuple[np.ndarray | None, str | None]:
    """Each row's group name in ``column`` (``""``: unknown), or ``None`` and why the column
    cannot make groups. Task labels become class names, ages in years age groups."""
    values = frame[column].to_numpy()
    if column in tasks:
        names = np.array(["", *tasks[column].classes], dtype=object)
        labels = values.astype(np.int64)
        known = (labels >= 0) & (labels < len(names) - 1)
        return names[np.where(known, labels + 1, 0)], None
    numeric = np.issubdtype(values.dtype, np.number)
    if column in AGE_COLUMNS and numeric:
        return age_groups(values), None
    missing = frame[column].isna().to_numpy() | (numeric & (values == NO_LABEL))
    text = np.array([_text(v) for v in values], dtype=object)
    text[missing] = ""
    levels = len(set(text[~missing]))
    if levels > MAX_LEVELS:
        return None, f"{levels} distinct values (at most {MAX_LEVELS} make groups)"
    return text, None


def group_arrays(frame: pd.DataFrame, task: str, requested: Sequence[str],
                 tasks: dict[str, Task]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The group columns of ``task``'s fairness report (:func:`group_columns`): column -> each
    row's group name (:func:`group_values`), and column -> why it cannot make groups."""
    values, left_out = {}, {}
    for column in group_columns(task, requested, tasks, list(frame.columns)):
        named, reason = group_values(frame, column, tasks)
        if named is None:
            left_out[column] = reason
        else:
            values[column] = named
    return values, left_out


def levels(named: np.ndarray, column: str, tasks: dict[str, Task]) -> list[str]:
    """The group names present in ``named`` (``""`` left out), in class order for a task, age
    order for an age, else sorted."""
    present = set(named) - {""}
    order = tasks[column].classes if column in tasks else age_bin_names() \
        if column in AGE_COLUMNS else sorted(present)
    return [name for name in order if name in present] + sorted(present - set(order))


def _text(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true, predicted) class pairs, ``(classes, classes)``."""
    return np.bincount(y_true * classes + y_pred, minlength=classes * classes).reshape(
        classes, classes)


def resample_confusions(matrix: np.ndarray, resamples: int, rng: np.random.Generator
                        ) -> np.ndarray:
    """``(resamples, k, k)`` confusion matrices of the group's rows resampled with replacement
    (a multinomial draw over the cells; see the module docstring)."""
    n = int(matrix.sum())
    if n == 0 or resamples == 0:
        return np.zeros((resamples, *matrix.shape), dtype=np.int64)
    draws = rng.multinomial(n, matrix.ravel() / n, size=resamples)
    return draws.reshape(resamples, *matrix.shape)


def rates(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, per-class recall and false positive rate of ``(..., k, k)`` confusion matrices
    (NaN where undefined), with the counts behind them."""
    with np.errstate(invalid="ignore", divide="ignore"):
        n = matrices.sum(axis=(-2, -1))
        hits = np.diagonal(matrices, axis1=-2, axis2=-1)
        positives = matrices.sum(axis=-1)       # true class c
        predicted = matrices.sum(axis=-2)       # predicted c
        negatives = n[..., None] - positives
        return {"accuracy": hits.sum(axis=-1) / n, "recall": hits / positives,
                "fpr": (predicted - hits) / negatives, "n": n, "positives": positives,
                "negatives": negatives}


def _interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None, None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _estimate(value: float, samples: np.ndarray | None, n: int, confidence: float) -> Estimate:
    low, high = _interval(samples, confidence) if samples is not None else (None, None)
    return Estimate(float(value), low, high, int(n))


def score_group(group: dict[str, str], matrix: np.ndarray, classes: Sequence[str],
                resamples: int, rng: np.random.Generator, min_size: int,
                confidence: float = CONFIDENCE) -> tuple[GroupFairness, np.ndarray]:
    """A group's estimates from its confusion matrix, and its resampled accuracies (for gaps).
    Per-class rates are kept where the group has rows to compute them from."""
    point = rates(matrix)
    draws = rates(resample_confusions(matrix, resamples, rng)) if resamples else None

    def pick(metric: str, i: int | None = None):
        if draws is None:
            return None
        return draws[metric] if i is None else draws[metric][:, i]

    recall, fpr = {}, {}
    for i, cls in enumerate(classes):
        if point["positives"][i]:
            recall[cls] = _estimate(point["recall"][i], pick("recall", i),
                                    point["positives"][i], confidence)
        if point["negatives"][i]:
            fpr[cls] = _estimate(point["fpr"][i], pick("fpr", i), point["negatives"][i],
                                 confidence)
    n = int(point["n"])
    accuracy = _estimate(point["accuracy"], pick("accuracy"), n, confidence)
    samples = draws["accuracy"] if draws is not None else np.empty(0)
    return GroupFairness(group, accuracy, recall, fpr, small=n < min_size), samples


def task_fairness(frame: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, task: Task,
                  tasks: dict[str, Task], requested: Sequence[str] = (), *,
                  resamples: int = 1000, min_group_size: int = 30, max_crossed: int = 3,
                  seed: int | Sequence[int] = 0, confidence: float = CONFIDENCE) -> TaskFairness:
    """Everyone, every group of each group column and every intersection of up to
    ``max_crossed`` columns, over the labelled rows of ``task``; ``frame`` is aligned with the
    labels. The same ``seed`` gives the same intervals."""
    rng = np.random.default_rng(seed)
    labelled = y_true != NO_LABEL
    frame = frame.reset_index(drop=True)[labelled]
    y_true, y_pred = y_true[labelled].astype(np.int64), y_pred[labelled].astype(np.int64)
    k = task.num_classes
    values, left_out = group_arrays(frame, task.name, requested, tasks)
    columns = list(values)
    overall, _ = score_group({}, confusion(y_true, y_pred, k), task.classes, resamples, rng,
                             min_group_size, confidence)
    groups, gaps = [], []
    for size in range(1, min(max_crossed, len(columns)) + 1) if len(y_true) else ():
        for crossed in combinations(columns, size):
            scored = []
            for combo in product(*(levels(values[c], c, tasks) for c in crossed)):
                rows = np.logical_and.reduce([values[c] == v for c, v in zip(crossed, combo)])
                if rows.any():
                    scored.append(score_group(dict(zip(crossed, combo)),
                                              confusion(y_true[rows], y_pred[rows], k),
                                              task.classes, resamples, rng, min_group_size,
                                              confidence))
            groups += [g for g, _ in scored]
            gap = _gap(crossed, [s for s in scored if not s[0].small], confidence)
            if gap is not None:
                gaps.append(gap)
    return TaskFairness(task.name, task.classes, tuple(columns), overall, tuple(groups),
                        tuple(gaps), resamples, confidence, min_group_size, left_out)


def _gap(columns: tuple[str, ...], scored: list[tuple[GroupFairness, np.ndarray]],
         confidence: float) -> GroupGap | None:
    """Best minus worst accuracy among the judged groups of one column set. The interval is
    that of the difference between these two groups (their independent resamples): an
    interval that includes 0 means the gap is not distinguishable from none."""
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda s: s[0].accuracy.value)
    worst = min(scored, key=lambda s: s[0].accuracy.value)
    replicates = best[1] - worst[1] if best[1].size else None
    estimate = _estimate(best[0].accuracy.value - worst[0].accuracy.value, replicates,
                         best[0].n + worst[0].n, confidence)
    return GroupGap(columns, best[0].group, worst[0].group, estimate)


def split_fairness(recipe, data, split: str, probs: dict[str, np.ndarray]
                   ) -> dict[str, TaskFairness]:
    """Per trained task, :func:`task_fairness` of one split of a run (``data`` is the
    ``PreparedData``, ``probs`` the split's predicted probabilities), as ``evaluate`` sets it."""
    settings = recipe.schema.evaluate
    frame = data.table.frame.iloc[data.splits.plans[split].base]
    out = {}
    for task in recipe.tasks:
        out[task] = task_fairness(
            frame, data.split_labels(split, task), probs[task].argmax(axis=1), data.tasks[task],
            data.table.tasks, settings.groups, resamples=settings.bootstrap,
            min_group_size=settings.min_group_size, max_crossed=settings.intersections,
            seed=(recipe.schema.seed, zlib.crc32(f"{split}/{task}".encode())))
    return out
