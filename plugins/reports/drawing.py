"""Drawing the run figures: training curves, confusion matrices, per-class scores, example grids.

Pure matplotlib on the Agg backend. Every function writes one PNG atomically (a temporary file
in the same folder, then ``os.replace``) and returns its path.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facelab.results import TaskFairness, TaskMetrics  # noqa: E402

DPI = 120


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".png")
    os.close(handle)
    try:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def _metric_groups(history: dict[str, list[float]]) -> tuple[list[str], list[str]]:
    """Training keys (no ``val_`` prefix) holding accuracy and loss, in history order."""
    train = [k for k in history if not k.startswith("val_") and history[k]]
    accuracy = [k for k in train if k.endswith("accuracy")]
    loss = [k for k in train if k.endswith("loss")]
    return accuracy, loss


def plot_curves(history: dict[str, list[float]], path: str | Path) -> Path:
    """Accuracy and loss per epoch, training (solid) vs validation (dashed); one line per task.

    ``history`` is Keras's ``History.history``: e.g. ``loss``, ``val_loss``, ``race_accuracy``,
    ``val_race_accuracy``. A panel with no matching keys says so instead of staying blank.
    """
    accuracy, loss = _metric_groups(history)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys, label in ((axes[0], accuracy, "accuracy"), (axes[1], loss, "loss")):
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, key in enumerate(keys):
            colour = colours[i % len(colours)]
            values = history[key]
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, values, "-o", color=colour, markersize=3, label=f"train {key}")
            val = history.get(f"val_{key}")
            if val:
                ax.plot(np.arange(1, len(val) + 1), val, "--s", color=colour, markersize=3,
                        label=f"validation {key}")
        ax.set_title(label.capitalize())
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.text(0.5, 0.5, f"no {label} recorded", ha="center", va="center",
                    transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str | Path, normalize: bool,
                   title: str) -> Path:
    """Confusion matrix (rows: true class, columns: predicted), counts or row-normalised shares."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        values = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    else:
        values = matrix
    side = max(4.0, 0.9 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = values.max() / 2 if values.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(round(values[i, j]))}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if values[i, j] > threshold else "black")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_per_class(metrics: TaskMetrics, path: str | Path, title: str) -> Path:
    """Precision, recall and F1 per class (and macro/weighted averages) with accuracy dashed:
    the race paper's Fig. 9."""
    scores = dict(metrics.per_class)
    for average in ("macro", "weighted"):
        if getattr(metrics, average) is not None:
            scores[f"{average} avg"] = getattr(metrics, average)
    rows, accuracy = list(scores), metrics.accuracy
    markers = (("precision", "o"), ("recall", "s"), ("f1", "^"))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.5))
    x = np.arange(len(rows))
    width = 0.25
    for i, (metric, marker) in enumerate(markers):
        values = [getattr(scores[r], metric) for r in rows]
        ax.bar(x + (i - 1) * width, values, width, alpha=0.35, label=None)
        ax.plot(x + (i - 1) * width, values, marker, linestyle="none", markersize=7, label=metric)
    ax.axhline(accuracy, linestyle="--", color="black", linewidth=1,
               label=f"accuracy {accuracy:.3f}")
    if rows and len(rows) > 2 and "macro avg" in rows:
        ax.axvline(rows.index("macro avg") - 0.5, color="grey", linewidth=0.8)
    ax.set_xticks(x, rows, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_examples(images: np.ndarray, true: list[str], pred: list[str], path: str | Path,
                  title: str, cols: int = 8) -> Path:
    """A grid of images titled ``true / pred`` (green when right, red when wrong).

    ``images``: uint8 (N, H, W, C) with C 1 or 3. The race paper's Figs. 10-11.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, H, W, 1 or 3), got shape {images.shape}")
    if not (len(images) == len(true) == len(pred)):
        raise ValueError("images, true and pred must have the same length")
    count = len(images)
    cols = max(1, min(cols, count)) if count else 1
    rows = max(1, math.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        image = images[i]
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        right = true[i] == pred[i]
        ax.set_title(f"true: {true[i]}\npred: {pred[i]}", fontsize=7,
                     color="tab:green" if right else "tab:red")
    if not count:
        axes[0, 0].text(0.5, 0.5, "no examples", ha="center", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_group_accuracy(fairness: TaskFairness, path: str | Path, title: str) -> Path:
    """Accuracy per group with its bootstrap interval: everyone, every group of each column,
    and the intersections large enough to judge. Groups too small to judge are hollow and
    grey; intersections too small are counted in the caption, not drawn."""
    shown = [fairness.overall, *(g for g in fairness.groups
                                 if len(g.columns) == 1 or not g.small)]
    hidden = sum(1 for g in fairness.groups if len(g.columns) > 1 and g.small)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.28 * len(shown)))
    y = np.arange(len(shown))[::-1]
    for row, group in zip(y, shown):
        estimate = group.accuracy
        colour = "grey" if group.small else "black" if not group.group else "tab:blue"
        if estimate.low is not None:
            ax.errorbar(estimate.value, row, xerr=[[estimate.value - estimate.low],
                                                   [estimate.high - estimate.value]],
                        fmt="none", ecolor=colour, capsize=3, linewidth=1.2)
        ax.plot(estimate.value, row, "o", color=colour,
                markerfacecolor="white" if group.small else colour)
    worst = fairness.worst
    ax.axvline(fairness.overall.accuracy.value, color="black", linestyle="--", linewidth=0.8)
    labels = [f"{g.label} (n={g.n}){' *' if g is worst else ''}" for g in shown]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("accuracy")
    ax.grid(axis="x", alpha=0.3)
    level = (f"{fairness.confidence:.0%} bootstrap intervals ({fairness.resamples} resamples)"
             if fairness.resamples else "no intervals")
    caption = (f"{level}; * worst judged group\nhollow grey: fewer than "
               f"{fairness.min_group_size} samples, too small to judge")
    if hidden:
        caption += f" ({hidden} such intersections not drawn)"
    ax.set_title(f"{title}\n{caption}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_overlays(images: np.ndarray, maps: dict[str, np.ndarray], titles: list[str],
                  path: str | Path, title: str, colours: list[str] | None = None,
                  cols: int = 8) -> Path:
    """Per image, a column: the image, then each map of ``maps`` (name -> (N, H, W)) over it;
    a single image gets a row instead.

    Each map's colours are stretched to its own range in that image (blue low, red high), and
    the range is written under it, so a nearly flat map is seen to be flat. ``images``: uint8
    (N, H, W, C) with C 1 or 3.
    """
    images = np.asarray(images)
    count, panels = len(images), 1 + len(maps)
    cols = max(1, min(cols, count))
    blocks = max(1, math.ceil(count / cols))
    shape = (1, panels) if count == 1 else (blocks * panels, cols)
    fig, axes = plt.subplots(*shape, figsize=(1.8 * shape[1], 1.8 * shape[0] + 0.6),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for i in range(count):
        column, top = i % cols, (i // cols) * panels
        image = images[i][..., 0] if images[i].shape[-1] == 1 else images[i]
        for panel, (name, values) in enumerate([("image", None), *maps.items()]):
            ax = axes[0, panel] if count == 1 else axes[top + panel, column]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            if values is not None:
                low, high = float(values[i].min()), float(values[i].max())
                ax.imshow(values[i], cmap="jet", alpha=0.45, vmin=low,
                          vmax=high if high > low else low + 1)
                ax.set_xlabel(f"{low:.2f}-{high:.2f}", fontsize=6, labelpad=1)
            if count == 1:
                ax.set_title(name, fontsize=7)
            elif column == 0:
                ax.set_ylabel(name, fontsize=7)
        if count > 1:
            axes[top, column].set_title(titles[i], fontsize=7,
                                        color=colours[i] if colours else "black")
    if count == 1:
        title = f"{title}\n{titles[0]}"
    if not count:
        axes[0, 0].text(0.5, 0.5, "no examples", ha="center", va="center")
    fig.suptitle(title, fontsize=9 if count == 1 else None)
    fig.tight_layout()
    return save_figure(fig, path)

__all__ = ["plot_curves", "plot_confusion", "plot_per_class", "plot_examples",
           "plot_group_accuracy", "plot_overlays"]
