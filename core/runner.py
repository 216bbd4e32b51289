"""Runs a recipe end to end: data, model, training, evaluation, report, MLflow."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.context import QuietProgress
from facelab.recipe import Recipe


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict
    counts: dict
    efficiency: dict
    history: dict
    run_id: str | None = None
    extra: dict = field(default_factory=dict)


def set_seed(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def new_output_dir(recipe: Recipe) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(recipe.schema.output_dir).expanduser() / f"{recipe.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


def write_json(path: Path, value) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(value, f, indent=2, default=_json_default)
    os.replace(f.name, path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def run_recipe(recipe: Recipe, progress=None, callbacks=(), console=None) -> RunResult:
    """Run a validated recipe; every run is tracked in MLflow unless ``tracking.enabled`` is off."""
    from contextlib import nullcontext

    from facelab import pipeline, tracking

    progress = progress or QuietProgress()
    set_seed(recipe.schema.seed)
    ctx = pipeline.make_context(recipe, progress)
    track = recipe.schema.tracking.enabled
    # Data problems (a missing folder, no usable image) are the user's to fix: they surface
    # before an MLflow run exists, like recipe errors.
    data = pipeline.prepare_data(recipe, ctx)
    run_context = tracking.mlflow_run(recipe) if track else nullcontext(None)
    with run_context as run:
        output = new_output_dir(recipe)
        _write_recipe(recipe, output)
        if track:
            tracking.set_output_dir(output)  # logged when the run ends, even if it fails
            tracking.log_params(recipe.flat())
            tracking.log_datasets(recipe, data)
        write_json(output / "data_counts.json", data.counts)
        sets = pipeline.datasets(recipe, data, ctx)
        model = pipeline.compile_model(recipe, data.images.shape[1:], data.tasks)
        _write_summary(model, output)
        all_callbacks = list(callbacks) + ([tracking.EpochMetrics(recipe.tasks)] if track else [])
        history, train_seconds = pipeline.train(recipe, model, sets, all_callbacks)
        write_json(output / "history.json", history)
        probs = {split: pipeline.predict(model, sets[split])
                 for split in ("val", "test") if split in sets}
        metrics = {split: pipeline.evaluate_split(recipe, data, split, p)
                   for split, p in probs.items()}
        efficiency = _efficiency(recipe, model, data, train_seconds)
        write_json(output / "metrics.json", metrics)
        write_json(output / "efficiency.json", efficiency)
        _write_reports(metrics, output)
        if recipe.schema.evaluate.figures:
            _figures(recipe, data, history, metrics, probs, output)
        result = RunResult(output, metrics, data.counts, efficiency, history,
                           run.info.run_id if run else None)
        if track:
            tracking.log_metrics(final_metrics(metrics, efficiency))
            if recipe.schema.tracking.log_model:
                tracking.log_model(model, recipe, data)
    return result


def final_metrics(metrics: dict, efficiency: dict) -> dict[str, float]:
    """Flat final metrics: ``test_race_accuracy``, ``test_race_white_f1-score``, ..."""
    flat: dict[str, float] = {}
    for split, tasks in metrics.items():
        for task, m in tasks.items():
            flat[f"{split}_{task}_accuracy"] = m["accuracy"]
            for name, row in m["report"].items():
                if isinstance(row, dict):
                    for key in ("precision", "recall", "f1-score"):
                        flat[f"{split}_{task}_{name.replace(' ', '_')}_{key}"] = row[key]
            groups = m.get("groups") or {}
            if groups.get("worst"):
                flat[f"{split}_{task}_worst_group_accuracy"] = groups["worst"]["accuracy"]
                flat[f"{split}_{task}_group_gap"] = groups["gap"]
    for key in ("total_params", "trainable_params", "ram_mb", "ms_per_image", "fps",
                "train_seconds"):
        if key in efficiency:
            flat[key] = efficiency[key]
    return flat


def _efficiency(recipe: Recipe, model, data, train_seconds: float) -> dict:
    from facelab.evaluate import device_name, inference_speed
    from facelab.model import parameter_counts, ram_mb

    counts = parameter_counts(model)
    size = recipe.schema.evaluate.batch_size
    plan = data.example_plan()
    rows = np.resize(np.arange(len(plan)), size)
    speed = inference_speed(model, plan.materialize(data.images, rows),
                            recipe.schema.evaluate.timing_batches)
    return {"device": device_name(), "total_params": counts["total"],
            "trainable_params": counts["trainable"], "non_trainable_params": counts["non_trainable"],
            "ram_mb": ram_mb(counts["total"]), "train_seconds": train_seconds,
            "epochs": recipe.schema.train.epochs, "train_samples": len(data.splits.plans["train"]),
            **speed}


def _write_recipe(recipe: Recipe, output: Path) -> None:
    (output / "recipe.yaml").write_text(recipe.to_yaml())
    if recipe.source_text:
        (output / "recipe.original.yaml").write_text(recipe.source_text)
    (output / "overrides.txt").write_text("".join(f"{o}\n" for o in recipe.overrides))


def _write_summary(model, output: Path) -> None:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    (output / "model_summary.txt").write_text(buffer.getvalue())


def _write_reports(metrics: dict, output: Path) -> None:
    """Classification reports as JSON and CSV, per split and task."""
    import pandas as pd

    folder = output / "reports"
    for split, tasks in metrics.items():
        for task, m in tasks.items():
            write_json(folder / f"{split}_{task}_report.json", m["report"])
            frame = pd.DataFrame({k: v for k, v in m["report"].items() if isinstance(v, dict)}).T
            frame.to_csv(folder / f"{split}_{task}_report.csv", index_label="class")
            if m.get("groups", {}).get("groups"):
                groups = pd.json_normalize(m["groups"]["groups"])
                groups.to_csv(folder / f"{split}_{task}_groups.csv", index=False)


def _figures(recipe, data, history, metrics, probs, output: Path) -> None:
    from facelab import figures

    folder = output / "figures"
    folder.mkdir(exist_ok=True)
    figures.plot_curves(history, folder / "curves.png")
    for split, tasks in metrics.items():
        for task, m in tasks.items():
            classes = list(data.tasks[task].classes)
            if not m["n"]:
                continue
            figures.plot_confusion(np.array(m["confusion"]), classes,
                                   folder / f"confusion_{split}_{task}.png", normalize=False,
                                   title=f"{task}: {split} confusion matrix")
            figures.plot_confusion(np.array(m["confusion"]), classes,
                                   folder / f"confusion_{split}_{task}_normalized.png",
                                   normalize=True, title=f"{task}: {split} confusion (normalised)")
            figures.plot_per_class(m["report"], m["accuracy"], folder / f"per_class_{split}_{task}.png",
                                   title=f"{task}: {split} precision / recall / F1")
    if "test" in probs:
        _example_grids(recipe, data, probs["test"], folder)


def _example_grids(recipe, data, probs, folder: Path) -> None:
    """Correct and wrong test predictions per task (the papers' example figures)."""
    from facelab import figures

    limit = recipe.schema.evaluate.examples
    if not limit:
        return
    plan = data.splits.plans["test"]
    for task in recipe.tasks:
        classes = data.tasks[task].classes
        y_true = data.split_labels("test", task)
        y_pred = probs[task].argmax(axis=1)
        for kind, mask in (("correct", (y_true == y_pred)), ("wrong", (y_true != y_pred))):
            rows = np.flatnonzero(mask & (y_true >= 0))[:limit]
            if len(rows) == 0:
                continue
            figures.plot_examples(data.images[plan.base[rows]],
                                  [classes[i] for i in y_true[rows]],
                                  [classes[i] for i in y_pred[rows]],
                                  folder / f"examples_{task}_{kind}.png",
                                  title=f"{task}: {kind} test predictions")
