"""plugins/reports/drawing.py: each function writes a readable PNG atomically and returns its path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix

from facelab.data import Task
from facelab.evaluate import classification_metrics
from facelab.plugins.reports import drawing as figures

CLASSES = ["white", "black", "asian", "indian"]


def check_png(path, returned) -> tuple[int, int]:
    assert returned == path and path.exists()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    with Image.open(path) as image:
        return image.size


def test_curves_single_and_multi_task(tmp_path):
    history = {"loss": [1.2, 0.9, 0.7], "race_accuracy": [0.5, 0.6, 0.7],
               "val_loss": [1.3, 1.0, 0.9], "val_race_accuracy": [0.45, 0.55, 0.6],
               "gender_accuracy": [0.6, 0.7, 0.8], "val_gender_accuracy": [0.6, 0.65, 0.7],
               "race_loss": [0.8, 0.6, 0.5], "learning_rate": [1e-3] * 3}
    width, height = check_png(tmp_path / "a" / "curves.png",
                              figures.plot_curves(history, tmp_path / "a" / "curves.png"))
    assert width > 2 * height * 0.9  # two panels side by side
    assert figures._metric_groups(history) == (["race_accuracy", "gender_accuracy"],
                                               ["loss", "race_loss"])
    path = tmp_path / "b" / "curves.png"
    check_png(path, figures.plot_curves({"loss": [1.0]}, path))  # no accuracy, no validation


def test_confusion_counts_and_normalised(tmp_path):
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    matrix = confusion_matrix(y_true, y_pred, labels=range(4))
    matrix[3] = 0  # a class with no samples must not divide by zero
    for normalize in (False, True):
        path = tmp_path / str(normalize) / "confusion.png"
        check_png(path, figures.plot_confusion(matrix, CLASSES, path, normalize=normalize,
                                               title="race: test"))


def test_per_class(tmp_path):
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    metrics = classification_metrics(y_true, y_pred, Task("race", tuple(CLASSES)))
    path = tmp_path / "per_class.png"
    check_png(path, figures.plot_per_class(metrics, path, title="race"))


@pytest.mark.parametrize("channels", [1, 3])
def test_examples_grid(tmp_path, channels):
    images = np.random.default_rng(2).integers(0, 256, (11, 24, 24, channels), dtype=np.uint8)
    true = [CLASSES[i % 4] for i in range(11)]
    pred = [CLASSES[(i * 3) % 4] for i in range(11)]
    path = tmp_path / "examples.png"
    width, height = check_png(path, figures.plot_examples(images, true, pred, path,
                                                          title="wrong", cols=4))
    assert height > width * 0.8  # 3 rows of 4
    with pytest.raises(ValueError, match="same length"):
        figures.plot_examples(images, true[:3], pred, tmp_path / "x.png", title="t")
    with pytest.raises(ValueError, match="N, H, W, 1 or 3"):
        figures.plot_examples(images[..., :1].repeat(2, -1), true, pred, tmp_path / "x.png",
                              title="t")


def test_replaces_an_existing_file(tmp_path):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")
    check_png(path, figures.plot_curves({"loss": [1, 0.5], "val_loss": [1, 0.7]}, path))
