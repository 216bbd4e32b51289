"""Evaluation: per-task metrics (sklearn), per-group accuracy, efficiency (params, RAM, speed)."""

from __future__ import annotations

import os
import platform
import time
from itertools import product
from typing import TYPE_CHECKING

import numpy as np

from facelab.data import NO_LABEL, Task
from facelab.results import ClassScores, GroupMetrics, GroupScore, TaskMetrics

if TYPE_CHECKING:
    import pandas as pd


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, task: Task) -> TaskMetrics:
    """Accuracy, Table 4's per-class scores, averages and the confusion matrix, over labelled
    rows only."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labelled = y_true != NO_LABEL
    y_true, y_pred = y_true[labelled], y_pred[labelled]
    labels = list(range(task.num_classes))
    if len(y_true) == 0:
        return TaskMetrics(task.name, task.classes, 0, float("nan"), {}, None, None, ())
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    per_class = {name: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]),
                                   int(support[i])) for i, name in enumerate(task.classes)}
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                     average=average, zero_division=0)
        averages[average] = ClassScores(float(p), float(r), float(f), int(len(y_true)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return TaskMetrics(task.name, task.classes, int(len(y_true)),
                       float((y_true == y_pred).mean()), per_class, averages["macro"],
                       averages["weighted"], tuple(tuple(int(v) for v in row) for row in matrix))


def group_accuracy(frame: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, task: Task,
                   columns: list[str], tasks: dict[str, Task], min_size: int = 1) -> GroupMetrics:
    """Accuracy for every combination of the task's true class and ``columns`` (e.g. gender x age
    group); the result knows its worst group and the gap between the best and the worst. Group
    names are :func:`facelab.fairness.group_values`' (class names, age groups); rows with an
    unknown value, and columns that cannot make groups, are left out."""
    from facelab.fairness import group_values, levels

    labelled = y_true != NO_LABEL
    frame = frame.reset_index(drop=True)
    names = {task.name: np.array(["", *task.classes], dtype=object)[
        np.where(labelled, y_true + 1, 0)]}
    for column in columns:
        if column != task.name and column in frame.columns:
            named, _ = group_values(frame, column, tasks)
            if named is not None:
                names[column] = named
    keys = list(names)
    known = np.logical_and.reduce([names[k] != "" for k in keys])
    correct = y_true == y_pred
    groups = []
    order = {**tasks, task.name: task}
    for combo in product(*(levels(names[k][known], k, order) for k in keys)):
        mask = known.copy()
        for key, value in zip(keys, combo):
            mask &= names[key] == value
        n = int(mask.sum())
        if n >= min_size:
            groups.append(GroupScore(dict(zip(keys, combo)), n, float(correct[mask].mean())))
    return GroupMetrics(tuple(keys), tuple(groups))


def device_name() -> str:
    """The device models run on, for reports: the GPU's name, or the CPU's model and cores."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)} (x{len(gpus)})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {model} ({os.cpu_count()} cores)"


def inference_speed(model, batch: np.ndarray, batches: int) -> dict[str, float]:
    """ms per image and FPS at ``len(batch)`` images per call, after one warm-up call."""
    model.predict_on_batch(batch)
    start = time.perf_counter()
    for _ in range(batches):
        model.predict_on_batch(batch)
    seconds = time.perf_counter() - start
    images = batches * len(batch)
    return {"batch_size": int(len(batch)), "images_timed": int(images),
            "ms_per_image": 1000 * seconds / images, "fps": images / seconds}
