"""Figures for every run (``evaluate.figures``): learning curves, confusion matrices, per-class
scores, accuracy per group with intervals (``fairness_<split>_<task>.png``) and example grids,
written to ``<run>/figures/`` when the run finishes.

An observer of the ``run_finished`` hook; matplotlib is imported only when it draws.
"""

from __future__ import annotations

import numpy as np

import facelab


@facelab.hookimpl
def run_finished(run, result, outputs):
    recipe = run.recipe
    if not recipe.schema.evaluate.figures:
        return
    from facelab.plugins.reports import drawing

    folder = run.output_dir / "figures"
    folder.mkdir(exist_ok=True)
    drawing.plot_curves(result.history, folder / "curves.png")
    for split, tasks in result.metrics.items():
        for task, m in tasks.items():
            if not m.n:
                continue
            classes = list(m.classes)
            for normalize, suffix, what in ((False, "", "confusion matrix"),
                                            (True, "_normalized", "confusion (normalised)")):
                drawing.plot_confusion(np.array(m.confusion), classes,
                                       folder / f"confusion_{split}_{task}{suffix}.png",
                                       normalize=normalize, title=f"{task}: {split} {what}")
            drawing.plot_per_class(m, folder / f"per_class_{split}_{task}.png",
                                   title=f"{task}: {split} precision / recall / F1")
    for split, tasks in result.fairness.items():
        for task, fairness in tasks.items():
            if fairness.overall.n:
                drawing.plot_group_accuracy(fairness, folder / f"fairness_{split}_{task}.png",
                                            title=f"{task}: {split} accuracy per group")
    if "test" in outputs.probabilities:
        _example_grids(recipe, outputs.data, outputs.probabilities["test"], folder)


def _example_grids(recipe, data, probs, folder) -> None:
    """Correct and wrong test predictions per task (the papers' example figures)."""
    from facelab.plugins.reports import drawing

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
            drawing.plot_examples(data.images[plan.base[rows]],
                                  [classes[i] for i in y_true[rows]],
                                  [classes[i] for i in y_pred[rows]],
                                  folder / f"examples_{task}_{kind}.png",
                                  title=f"{task}: {kind} test predictions")
