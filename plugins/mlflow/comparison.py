"""A sweep's comparison of its children, logged to the parent run (as Ludwig's
``compare_performance`` does): learning curves overlaid, per-class F1 side by side, and a
results table sorted by the test metric."""

from __future__ import annotations

from pathlib import Path

from facelab.results import RunResult, metric_name


def headline_metric(result: RunResult) -> str:
    """What children are ranked by: the first task's test accuracy (validation without test)."""
    task = result.run.recipe.tasks[0]
    split = "test" if "test" in result.metrics else "val"
    return metric_name(split, task, "accuracy")


def results_table(children: list[tuple[str, RunResult]]) -> list[dict]:
    """One row per finished child, best first by the headline metric."""
    rows = []
    for name, result in children:
        metrics = result.final_metrics()
        rows.append({"run": name, "run_id": result.references.get("MLflow run", ""),
                     **{k: metrics[k] for k in result.headline()}})
    key = headline_metric(children[0][1]) if children else None
    return sorted(rows, key=lambda r: -(r.get(key) or 0.0))


def draw(children: list[tuple[str, RunResult]], folder: Path) -> list[Path]:
    """``curves.png`` (validation accuracy and loss per epoch, one line per child) and
    ``per_class_f1.png`` (test F1 per class of the first task, one bar per child)."""
    from facelab.plugins.reports import drawing

    plt = drawing.plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    task = children[0][1].run.recipe.tasks[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, result in children:
        history = result.history
        accuracy = history.get(f"val_{task}_accuracy") or history.get("val_accuracy") or []
        loss = history.get("val_loss") or []
        axes[0].plot(np.arange(1, len(accuracy) + 1), accuracy, "-o", markersize=3, label=name)
        axes[1].plot(np.arange(1, len(loss) + 1), loss, "-o", markersize=3, label=name)
    for ax, what in zip(axes, (f"validation {task} accuracy", "validation loss")):
        ax.set_title(what)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    paths = [drawing.save_figure(fig, folder / "curves.png")]

    split = "test" if "test" in children[0][1].metrics else "val"
    classes = list(children[0][1].metrics[split][task].classes)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(classes) + 3), 4.5))
    width = 0.8 / len(children)
    x = np.arange(len(classes))
    for i, (name, result) in enumerate(children):
        per_class = result.metrics[split][task].per_class
        ax.bar(x + (i - (len(children) - 1) / 2) * width,
               [per_class[c].f1 if c in per_class else 0.0 for c in classes], width, label=name)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{split} F1")
    ax.set_title(f"{task}: {split} F1 per class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    paths.append(drawing.save_figure(fig, folder / "per_class_f1.png"))
    return paths


def log(children: list[tuple[str, RunResult]]) -> None:
    """Log the figures and the sorted results table to the active (parent) run."""
    import tempfile

    import mlflow

    if not children:
        return
    rows = results_table(children)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    mlflow.log_table({c: [row.get(c) for row in rows] for c in columns},
                     "comparison/results.json")
    with tempfile.TemporaryDirectory(prefix="facelab-comparison-") as tmp:
        draw(children, Path(tmp))
        mlflow.log_artifacts(tmp, "comparison")
