"""Evaluation: per-task metrics (sklearn), per-group accuracy, efficiency (params, RAM, speed)."""

from __future__ import annotations

import os
import platform
import time
from itertools import product

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

from facelab.data import NO_LABEL, Task


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, task: Task) -> dict:
    """Accuracy, Table 4's per-class report and the confusion matrices, over labelled rows."""
    labelled = y_true != NO_LABEL
    y_true, y_pred = y_true[labelled], y_pred[labelled]
    labels = list(range(task.num_classes))
    if len(y_true) == 0:
        return {"n": 0, "accuracy": float("nan"), "report": {}, "confusion": [], "confusion_normalized": []}
    report = classification_report(y_true, y_pred, labels=labels, target_names=list(task.classes),
                                   output_dict=True, zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "report": report,
        "confusion": matrix.tolist(),
        "confusion_normalized": normalized.round(4).tolist(),
    }


def group_accuracy(frame: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray, task: Task,
                   columns: list[str], tasks: dict[str, Task], min_size: int = 1) -> dict:
    """Accuracy for every combination of the task's true class and ``columns`` (e.g. gender x age
    group), the worst group and the gap between the best and the worst."""
    labelled = y_true != NO_LABEL
    keys = [task.name, *[c for c in columns if c != task.name and c in frame.columns]]
    values = {task.name: y_true}
    values.update({c: frame[c].to_numpy() for c in keys[1:]})
    correct = y_true == y_pred
    groups = []
    for combo in product(*(np.unique(values[k][labelled]) for k in keys)):
        mask = labelled.copy()
        for key, value in zip(keys, combo):
            mask &= values[key] == value
        n = int(mask.sum())
        if n >= min_size:
            names = {key: _value_name(key, value, tasks) for key, value in zip(keys, combo)}
            groups.append({"group": names, "n": n, "accuracy": float(correct[mask].mean())})
    if not groups:
        return {"columns": keys, "groups": [], "worst": None, "best": None, "gap": None}
    worst = min(groups, key=lambda g: g["accuracy"])
    best = max(groups, key=lambda g: g["accuracy"])
    return {"columns": keys, "groups": groups, "worst": worst, "best": best,
            "gap": best["accuracy"] - worst["accuracy"]}


def _value_name(column: str, value, tasks: dict[str, Task]) -> str:
    if column in tasks and 0 <= int(value) < tasks[column].num_classes:
        return tasks[column].classes[int(value)]
    return str(value.item() if hasattr(value, "item") else value)


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


def inference_speed(model, batch: np.ndarray, batches: int) -> dict:
    """ms per image and FPS at ``len(batch)`` images per call, after one warm-up call."""
    model.predict_on_batch(batch)
    start = time.perf_counter()
    for _ in range(batches):
        model.predict_on_batch(batch)
    seconds = time.perf_counter() - start
    images = batches * len(batch)
    return {"batch_size": int(len(batch)), "images_timed": int(images),
            "ms_per_image": 1000 * seconds / images, "fps": images / seconds}
