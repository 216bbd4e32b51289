"""Keras classes of the ``se`` attention plugin (imported when a model is built or loaded).

Kept apart from ``se.py`` so that loading the plugins and validating a recipe never imports
Keras (and TensorFlow). Import this module before ``keras.models.load_model`` on a saved model
that contains a SqueezeExcite layer: Keras 3 imports the module recorded in the file only for
its own packages (keras, keras_hub, ...), not for ``facelab``.
"""

from __future__ import annotations

import keras
from keras import ops


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
