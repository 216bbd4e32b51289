"""Keras classes of the loss plugins (imported when a model is compiled or loaded).

Kept apart from ``cross_entropy.py`` so that loading the plugins and validating a recipe never
imports Keras (and TensorFlow). ``masked_multitask`` uses the same loss class. Import this module
before ``keras.models.load_model`` on a model compiled with it: Keras 3 imports the module
recorded in the file only for its own packages (keras, keras_hub, ...), not for ``facelab``.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="facelab")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy where a label of -1 adds zero loss and zero gradient.

    ``normalizer="batch"`` divides the batch's sum by the batch size M (the multi-task paper's
    eq. 1); ``"labelled"`` divides by the number of labelled samples instead.
    """

    def __init__(self, normalizer: str = "batch", label_smoothing: float = 0.0,
                 name: str = "masked_sparse_categorical_crossentropy", **kwargs):
        kwargs.pop("reduction", None)  # get_config() carries it; reloading passes it back
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        self.normalizer = normalizer
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        mask = ops.cast(labels >= 0, y_pred.dtype)
        safe = ops.where(labels >= 0, labels, ops.zeros_like(labels))
        if self.label_smoothing:
            target = ops.one_hot(safe, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
            target = target * (1 - self.label_smoothing) + self.label_smoothing / ops.shape(y_pred)[-1]
            per_sample = keras.losses.categorical_crossentropy(target, y_pred)
        else:
            per_sample = keras.losses.sparse_categorical_crossentropy(safe, y_pred)
        per_sample = per_sample * mask
        if self.normalizer == "labelled":
            batch = ops.cast(ops.shape(mask)[0], y_pred.dtype)
            per_sample = per_sample * batch / ops.maximum(ops.sum(mask), 1.0)
        return per_sample

    def get_config(self):
        return {**super().get_config(), "normalizer": self.normalizer,
                "label_smoothing": self.label_smoothing}
