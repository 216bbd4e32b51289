"""Head ``classification``: pooling, dropout and a softmax layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import facelab
from facelab.data import Task


class ClassificationParams(facelab.Params):
    pooling: Literal["avg", "max", "flatten"] = facelab.field(
        "avg", "how a 4-D feature map becomes a vector (ignored for vector features)")
    hidden: list[int] = facelab.field([], "widths of ReLU dense layers before the output")
    dropout: float = facelab.field(0.0, "dropout rate before each dense layer", ge=0, lt=1)


def build(params: ClassificationParams, task: Task) -> Callable:
    """Global pooling (avg by default), dropout, optional hidden layers, Dense softmax.

    With the defaults on a 4-D map this is the race paper's classifier: GAP, Dropout, Dense(N).
    """
    import keras

    def head(features):
        x = features
        if len(x.shape) == 4:
            pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
                    "flatten": keras.layers.Flatten}[params.pooling]
            x = pool(name=f"{task.name}_pool")(x)
        for i, width in enumerate(params.hidden):
            if params.dropout:
                x = keras.layers.Dropout(params.dropout, name=f"{task.name}_dropout{i}")(x)
            x = keras.layers.Dense(width, activation="relu", name=f"{task.name}_fc{i}")(x)
        if params.dropout:
            x = keras.layers.Dropout(params.dropout, name=f"{task.name}_dropout")(x)
        return keras.layers.Dense(task.num_classes, activation="softmax",
                                  name=f"{task.name}_probs")(x)

    return head


@facelab.hookimpl
def register_heads(register):
    register("classification", build, ClassificationParams)
