"""A sweep's comparison of its children, logged to the parent run (as Ludwig's
``compare_performance`` does): learning curves overlaid, per-class F1 side by side, and a
results table sorted by the objective. Read from the tracking store, so whichever worker
completes a study compares the trials of every worker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facelab.results import epoch_metric_name, metric_name, parse_metric_name


@dataclass(frozen=True)
class Child:
    """One child run as the store holds it."""

    name: str
    run_id: str
    status: str  # FINISHED, KILLED (pruned or lost), FAILED
    state: str  # the Optuna state tag, or the status
    final: dict[str, float]  # final metrics (no epoch/ or system/ ones)
    curves: dict[str, list[float]]  # per-epoch metric -> values, epoch 1 first


def headline_metric(final: dict[str, float], task: str) -> str:
    """The first task's test accuracy (validation without a test split)."""
    test = metric_name("test", task, "accuracy")
    return test if test in final else metric_name("val", task, "accuracy")


def curve_keys(task: str) -> tuple[str, str]:
    return epoch_metric_name("val", "accuracy", task), epoch_metric_name("val", "loss")


def children(client, parent_run_id: str, task: str) -> list[Child]:
    """The parent's children with their final metrics and validation curves."""
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              order_by=["attributes.start_time ASC"])
    out = []
    for run in runs:
        curves = {}
        for key in curve_keys(task):
            history = sorted(client.get_metric_history(run.info.run_id, key),
                             key=lambda m: m.step)
            curves[key] = [m.value for m in history]
        final = {k: v for k, v in run.data.metrics.items()
                 if not k.startswith(("epoch/", "system/"))}
        out.append(Child(run.info.run_name, run.info.run_id, run.info.status,
                         run.data.tags.get("facelab.optuna.state", run.info.status), final,
                         curves))
    return out


def results_table(found: list[Child], metric: str | None, direction: str = "maximize",
                  task: str | None = None) -> list[dict]:
    """One row per finished child (its headline metrics), best first by ``metric`` (default:
    :func:`headline_metric`)."""
    rows = []
    for child in found:
        if child.status != "FINISHED":
            continue
        key = metric or headline_metric(child.final, task or "")
        shown = {k: v for k, v in child.final.items()
                 if k == key or k in ("efficiency/total_params", "efficiency/fps")
                 or (parse_metric_name(k) and parse_metric_name(k).is_headline)}
        rows.append({"run": child.name, "run_id": child.run_id, **shown, "_key": key})
    sign = -1.0 if direction == "maximize" else 1.0
    rows.sort(key=lambda r: sign * (r.get(r["_key"]) or 0.0))
    for row in rows:
        del row["_key"]
    return rows


def draw(found: list[Child], task: str, folder: Path) -> list[Path]:
    """``curves.png`` (validation accuracy and loss per epoch, one line per child, pruned ones
    ending early) and ``per_class_f1.png`` (F1 per class of the first task, one bar per
    finished child)."""
    from facelab.plugins.reports import drawing

    plt = drawing.plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for child in found:
        for ax, key in zip(axes, curve_keys(task)):
            values = child.curves.get(key) or []
            label = child.name + ("" if child.status == "FINISHED" else f" ({child.state})")
            ax.plot(np.arange(1, len(values) + 1), values, "-o", markersize=3, label=label)
    for ax, what in zip(axes, (f"validation {task} accuracy", "validation loss")):
        ax.set_title(what)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    paths = [drawing.save_figure(fig, folder / "curves.png")]

    finished = [c for c in found if c.status == "FINISHED"]
    if not finished:
        return paths
    split = "test" if any(k.startswith("test/") for k in finished[0].final) else "val"
    prefix = f"{split}/{task}/f1/"
    classes = sorted({k[len(prefix):] for c in finished for k in c.final if k.startswith(prefix)})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(classes) + 3), 4.5))
    width = 0.8 / len(finished)
    x = np.arange(len(classes))
    for i, child in enumerate(finished):
        ax.bar(x + (i - (len(finished) - 1) / 2) * width,
               [child.final.get(prefix + c, 0.0) for c in classes], width, label=child.name)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{split} F1")
    ax.set_title(f"{task}: {split} F1 per class")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    paths.append(drawing.save_figure(fig, folder / "per_class_f1.png"))
    return paths


def log(parent_run_id: str, task: str, metric: str | None = None,
        direction: str = "maximize") -> None:
    """Read the parent's children from the store; log the figures and the sorted results
    table (``comparison/``) to the parent."""
    import tempfile

    import mlflow

    client = mlflow.MlflowClient()
    found = children(client, parent_run_id, task)
    if not found:
        return
    rows = results_table(found, metric, direction, task)
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        client.log_table(parent_run_id, {c: [row.get(c) for row in rows] for c in columns},
                         "comparison/results.json")
    with tempfile.TemporaryDirectory(prefix="facelab-comparison-") as tmp:
        draw(found, task, Path(tmp))
        client.log_artifacts(parent_run_id, tmp, "comparison")
