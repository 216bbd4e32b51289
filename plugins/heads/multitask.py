"""Head ``multitask``: one task branch of the multi-task paper (Rohani et al. 2023, section 3.3).

Each task gets its own branch after the shared CNN: FC 256 -> FC 256 -> FC N (softmax), ReLU
after the first two, dropout on the input of all three, and optionally batch normalisation after
the first two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import facelab
from facelab.data import Task
from facelab.plugins.backbones.bknet import kernel_initializer


class MultitaskHeadParams(facelab.Params):
    units: list[int] = facelab.field([256, 256], "widths of the hidden FC layers", min_length=1)
    dropout: float = facelab.field(0.5, "dropout rate on the input of every FC layer", ge=0, lt=1)
    batch_norm: bool = facelab.field(
        False, "BN after the hidden FC layers (the text has it; Table 3's counts exclude it)")
    init: Literal["gaussian", "glorot"] = facelab.field(
        "glorot", "kernel init: glorot (Keras's default) or gaussian (the paper's N(0, variance 0.01))")


def build(params: MultitaskHeadParams, task: Task) -> Callable:
    """One task's branch: 2 x (dropout, FC 256, optional BN, ReLU), then dropout, FC N softmax.

    Layers are named ``<task>_fc1``, ``<task>_bn1``, ... ``<task>_probs``. Section 3.3 puts a BN
    after the first two FC layers, but Table 3's parameter counts (2,418,146 for config A) only
    reproduce without it, so ``batch_norm`` is off by default. ``init: gaussian`` is the paper's
    N(0, 0.01) initialisation (section 4.3); Glorot is the default.
    """
    import keras

    def head(features):
        x = features
        if len(x.shape) > 2:
            x = keras.layers.Flatten(name=f"{task.name}_flatten")(x)
        for i, width in enumerate(params.units, start=1):
            if params.dropout:
                x = keras.layers.Dropout(params.dropout, name=f"{task.name}_dropout{i}")(x)
            x = keras.layers.Dense(width, kernel_initializer=kernel_initializer(params.init),
                                   name=f"{task.name}_fc{i}")(x)
            if params.batch_norm:
                x = keras.layers.BatchNormalization(name=f"{task.name}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"{task.name}_relu{i}")(x)
        if params.dropout:
            x = keras.layers.Dropout(params.dropout, name=f"{task.name}_dropout")(x)
        return keras.layers.Dense(task.num_classes, activation="softmax",
                                  kernel_initializer=kernel_initializer(params.init),
                                  name=f"{task.name}_probs")(x)

    return head


@facelab.hookimpl
def register_heads(register):
    register("multitask", build, MultitaskHeadParams)
