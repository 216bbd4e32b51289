"""Attention ``cbam``: the Convolutional Block Attention Module (Woo et al. 2018)."""

from __future__ import annotations

import keras
from keras import ops

import facelab


@keras.saving.register_keras_serializable(package="facelab")
class CBAM(keras.layers.Layer):
    """Channel attention, then spatial attention, on a (batch, H, W, C) feature map.

    Channel: ``sigmoid(MLP(avgpool(F)) + MLP(maxpool(F)))`` with one MLP (C -> C/r, ReLU -> C)
    shared by both pooled vectors. Spatial: ``sigmoid(conv7x7([mean_c(F'); max_c(F')]))``.
    Each attention map multiplies the features.
    """

    def __init__(self, reduction: int = 8, kernel_size: int = 7, use_bias: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.kernel_size = kernel_size
        self.use_bias = use_bias

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(1, channels // self.reduction)
        self.mlp_hidden = keras.layers.Dense(hidden, activation="relu", use_bias=self.use_bias,
                                             name="mlp_hidden")
        self.mlp_out = keras.layers.Dense(channels, use_bias=self.use_bias, name="mlp_out")
        self.spatial_conv = keras.layers.Conv2D(1, self.kernel_size, padding="same",
                                                activation="sigmoid", use_bias=self.use_bias,
                                                name="spatial_conv")
        self.mlp_hidden.build((None, channels))
        self.mlp_out.build((None, hidden))
        self.spatial_conv.build((*input_shape[:-1], 2))

    def call(self, inputs):
        avg = ops.mean(inputs, axis=(1, 2))
        peak = ops.max(inputs, axis=(1, 2))
        channel = ops.sigmoid(self.mlp_out(self.mlp_hidden(avg))
                              + self.mlp_out(self.mlp_hidden(peak)))
        x = inputs * channel[:, None, None, :]
        pooled = ops.concatenate([ops.mean(x, axis=-1, keepdims=True),
                                  ops.max(x, axis=-1, keepdims=True)], axis=-1)
        return x * self.spatial_conv(pooled)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction,
                "kernel_size": self.kernel_size, "use_bias": self.use_bias}


class CbamParams(facelab.Params):
    reduction: int = facelab.field(8, "channel MLP reduction ratio r (hidden width = C / r)", ge=1)
    kernel_size: int = facelab.field(7, "side of the spatial attention convolution", ge=1)
    use_bias: bool = facelab.field(
        False, "biases in the MLP and the conv (the race paper's counts have none)")


def build(params: CbamParams) -> CBAM:
    """CBAM: channel attention (a shared MLP on avg- and max-pooled features), then spatial (7x7).

    On EfficientNetB3's 1536-channel map with reduction 8 and no biases it adds 589,922
    parameters: the race paper's model 2 (11,379,605 in all).
    """
    return CBAM(params.reduction, params.kernel_size, params.use_bias, name="cbam")


@facelab.hookimpl
def register_attentions(register):
    register("cbam", build, CbamParams)
