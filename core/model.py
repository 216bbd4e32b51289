"""Model assembly: input -> backbone -> attention -> one head per task; the masked metric."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from facelab.data import Task
from facelab.errors import FacelabError


@keras.saving.register_keras_serializable(package="facelab")
class MaskedAccuracy(keras.metrics.Mean):
    """Accuracy over labelled samples only: a label of -1 is not counted."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        correct = ops.cast(ops.equal(labels, predicted), self.dtype)
        weight = ops.cast(labels >= 0, self.dtype)
        if sample_weight is not None:
            weight = weight * ops.cast(ops.reshape(sample_weight, (-1,)), self.dtype)
        return super().update_state(correct, sample_weight=weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def build_model(recipe, input_shape: tuple[int, int, int], tasks: dict[str, Task]) -> keras.Model:
    """The functional model of a recipe; outputs are a dict keyed by task name."""
    inputs = keras.Input(input_shape, name="image")
    backbone = recipe.backbone.build(tuple(input_shape))
    features = backbone(inputs)
    attention = recipe.attention.build()
    if attention is not None:
        if len(features.shape) != 4:
            raise FacelabError(
                f"model.attention: {recipe.attention.name} needs a 4-D feature map, but backbone "
                f"{recipe.backbone.name} outputs shape {tuple(features.shape)}; use attention "
                "'none' or a backbone without a classifier top")
        features = attention(features)
    outputs = {task: recipe.heads[task].build(tasks[task])(features) for task in recipe.tasks}
    return keras.Model(inputs, outputs, name=recipe.name.replace(" ", "_"))


def parameter_counts(model: keras.Model) -> dict[str, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def ram_mb(total_params: int, bytes_per_param: int = 4) -> float:
    """The race paper's eq. 7: parameters x bytes per value / 1024^2."""
    return total_params * bytes_per_param / 1024 ** 2
