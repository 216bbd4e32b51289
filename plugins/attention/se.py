"""Attention ``se``: squeeze-and-excitation (Hu et al. 2018)."""

from __future__ import annotations

import keras
from keras import ops

import facelab


@keras.saving.register_keras_serializable(package="facelab")
class SqueezeExcite(keras.layers.Layer):
    """Channel gates ``sigmoid(W2 relu(W1 avgpool(F)))`` that multiply a (batch, H, W, C) map."""

    def __init__(self, reduction: int = 16, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.use_bias = use_bias

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(1, channels // self.reduction)
        self.squeeze = keras.layers.Dense(hidden, activation="relu", use_bias=self.use_bias,
                                          name="squeeze")
        self.excite = keras.layers.Dense(channels, activation="sigmoid", use_bias=self.use_bias,
                                         name="excite")
        self.squeeze.build((None, channels))
        self.excite.build((None, hidden))

    def call(self, inputs):
        gates = self.excite(self.squeeze(ops.mean(inputs, axis=(1, 2))))
        return inputs * gates[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "use_bias": self.use_bias}


class SeParams(facelab.Params):
    reduction: int = facelab.field(16, "reduction ratio r (hidden width = C / r)", ge=1)
    use_bias: bool = facelab.field(True, "biases in the two dense layers")


def build(params: SeParams) -> SqueezeExcite:
    """Squeeze-and-excitation: per-channel gates from the globally averaged features."""
    return SqueezeExcite(params.reduction, params.use_bias, name="se")


@facelab.hookimpl
def register_attentions(register):
    register("se", build, SeParams)
