"""Loss ``cross-entropy``: sparse categorical cross-entropy that ignores unlabelled samples."""

from __future__ import annotations

from typing import Literal

import facelab
from facelab.data import LossSpec, Task

#: Modules defining this plugin's Keras classes: import them before loading a saved model.
KERAS_MODULES = ("facelab.plugins.losses.cross_entropy_layers",)


class CrossEntropyParams(facelab.Params):
    label_smoothing: float = facelab.field(0.0, "label smoothing, 0-1", ge=0, lt=1)
    normalizer: Literal["batch", "labelled"] = facelab.field(
        "batch", "divide by the batch size, or by the number of labelled samples")


def build(params: CrossEntropyParams, tasks: dict[str, Task]) -> LossSpec:
    """Sparse categorical cross-entropy per task, with equal weights.

    Samples without a label for a task (-1) add nothing to that task's loss.
    """
    from facelab.plugins.losses.cross_entropy_layers import MaskedSparseCategoricalCrossentropy

    return LossSpec({name: MaskedSparseCategoricalCrossentropy(params.normalizer,
                                                               params.label_smoothing)
                     for name in tasks})


@facelab.hookimpl
def register_losses(register):
    register("cross-entropy", build, CrossEntropyParams)
