"""Keras classes of the ``cbam`` attention plugin (imported when a model is built or loaded).

Kept apart from ``cbam.py`` so that loading the plugins and validating a recipe never imports
Keras (and TensorFlow). Import this module before ``keras.models.load_model`` on a saved model
that contains a CBAM layer: Keras 3 imports the module recorded in the file only for its own
packages (keras, keras_hub, ...), not for ``facelab``.
"""

from __future__ import annotations

import keras
from keras import ops


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
        x = self._channel_refined(inputs)
        return x * self._spatial_map(x)

    def spatial_attention(self, inputs):
        """The spatial attention map (batch, H, W, 1), in 0-1, that ``call`` multiplies the
        channel-refined features by, for the layer's input feature map ``inputs``."""
        return self._spatial_map(self._channel_refined(inputs))

    def _channel_refined(self, inputs):
        avg = ops.mean(inputs, axis=(1, 2))
        peak = ops.max(inputs, axis=(1, 2))
        channel = ops.sigmoid(self.mlp_out(self.mlp_hidden(avg))
                              + self.mlp_out(self.mlp_hidden(peak)))
        return inputs * channel[:, None, None, :]

    def _spatial_map(self, x):
        pooled = ops.concatenate([ops.mean(x, axis=-1, keepdims=True),
                                  ops.max(x, axis=-1, keepdims=True)], axis=-1)
        return self.spatial_conv(pooled)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction,
                "kernel_size": self.kernel_size, "use_bias": self.use_bias}
