"""Loss ``masked-multitask``: the multi-task paper's eqs. 1 and 2 (Rohani et al. 2023, 3.4).

Eq. 1: ``L_t = -1/M sum_i beta_i^t log p_i^t(S_i^t)``, where ``beta_i^t`` is 0 for a sample
without a label for task t (label -1), so it adds zero loss and zero gradient to that branch.
Eq. 2: ``L = sum_t mu_t L_t + lambda ||W||^2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import facelab
from facelab.data import LossSpec, Task
from facelab.errors import FacelabError, did_you_mean

if TYPE_CHECKING:
    import keras

#: Modules defining this plugin's Keras classes: import them before loading a saved model.
KERAS_MODULES = ("facelab.plugins.losses.cross_entropy_layers",)

#: Names Keras gives kernel variables (Dense, Conv*, separable and depthwise convs).
KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")


class MaskedMultitaskParams(facelab.Params):
    weights: dict[str, float] = facelab.field(
        {}, "mu_t per task (eq. 2); tasks not listed get 1")
    l2: float = facelab.field(0.0, "lambda in eq. 2: adds lambda * sum of squared kernel weights",
                              ge=0)
    l2_scope: Literal["kernels", "outputs"] = facelab.field(
        "kernels", "which kernels lambda applies to: every conv/FC kernel, or only the softmax layers'")
    normalizer: Literal["batch", "labelled"] = facelab.field(
        "batch", "divide a task's loss by the batch size M (eq. 1) or by its labelled samples")


def regularised_variables(model: keras.Model, scope: str) -> list:
    """The kernel variables lambda applies to: all of them, or those of the model's output layers."""
    if scope == "outputs":
        import keras

        # Keras exposes no public "layer that produced this output"; _keras_history is how
        # functional models record it (operation, node index, tensor index).
        layers = [tensor._keras_history[0] for tensor in keras.tree.flatten(model.outputs)]
        variables = [v for layer in layers for v in layer.trainable_variables]
    else:
        variables = model.trainable_variables
    return [v for v in variables if v.name in KERNEL_NAMES]


def add_l2(model: keras.Model, l2: float, scope: str = "kernels") -> int:
    """Attach ``keras.regularizers.L2(l2)`` (l2 * sum w^2) to the kernels; returns their count.

    Keras 3 adds every trainable variable's ``regularizer`` to ``model.losses``, which ``fit``
    adds to the compiled loss, so setting it after the model is built is enough.
    """
    import keras

    variables = regularised_variables(model, scope)
    for variable in variables:
        variable.regularizer = keras.regularizers.L2(l2)
    return len(variables)


def build(params: MaskedMultitaskParams, tasks: dict[str, Task]) -> LossSpec:
    """Masked cross-entropy per task, weighted by mu_t, plus lambda * ||W||^2 (eqs. 1-2).

    A sample whose label for a task is -1 adds zero loss and zero gradient to that task's branch.
    Each task's loss is normalised by the batch size M, as in eq. 1 (``normalizer: labelled``
    divides by the task's labelled samples instead). ``weights`` are the mu_t (the paper uses 1).
    ``l2`` is lambda (the paper uses 0.01), applied as ``keras.regularizers.L2`` on every
    conv/FC kernel (biases and BN are not decayed); ``l2_scope: outputs`` limits it to the softmax
    layers, a literal reading of "W refers to the output weights".
    """
    for name in params.weights:
        if name not in tasks:
            raise FacelabError(f"train.loss.weights.{name}: "
                               f"{did_you_mean(name, tasks, what='task')} (tasks are model.heads)")
    from facelab.plugins.losses.cross_entropy_layers import MaskedSparseCategoricalCrossentropy

    losses = {name: MaskedSparseCategoricalCrossentropy(params.normalizer) for name in tasks}
    weights = {name: float(params.weights.get(name, 1.0)) for name in tasks}

    def prepare_model(model: keras.Model) -> None:
        if params.l2 > 0 and add_l2(model, params.l2, params.l2_scope) == 0:
            raise FacelabError("train.loss.l2: the model has no kernel variables to regularise")

    return LossSpec(losses, weights, prepare_model)


@facelab.hookimpl
def register_losses(register):
    register("masked-multitask", build, MaskedMultitaskParams)
