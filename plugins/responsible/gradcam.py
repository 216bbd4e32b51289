"""Grad-CAM (Selvaraju et al. 2017) for any facelab model, and CBAM's spatial attention map.

Grad-CAM weighs each channel of the last feature map the heads see by the mean gradient of a
task's class probability with respect to it, sums the weighted channels, keeps the positive part
and scales it to 0-1: where the evidence for that class lies. The feature map is found by
walking the model's graph, not by layer names: the deepest 4-D tensor that every task output
depends on (the attended map after CBAM or SE, else the backbone's map). A backbone that
flattens its map inside itself (``bknet``) or ends in a classifier (EfficientNet with
``include_top``) is a nested model whose output is not 4-D; the walk then goes inside it.

Keras offers no public way to reach the tensors of a nested model's call in the outer graph, so
this module reads Keras 3's node records (``_keras_history``, ``_inbound_nodes``); it only
reads them and builds new functional models that share the original layers and weights.
An attention layer with a ``spatial_attention(features)`` method (CBAM) at or before the map
also gets its spatial map computed, from the features it receives.
Libraries such as tf-keras-vis expect a layer name and a flat model, which facelab's nested
backbones are not.

TensorFlow and Keras are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facelab.errors import FacelabError


@dataclass
class Explanations:
    """What :meth:`GradCam.explain` returns for N images of H x W pixels."""

    probabilities: dict[str, np.ndarray]  # task -> (N, classes)
    explained: dict[str, np.ndarray]  # task -> (N,) the class index each map explains
    heatmaps: dict[str, np.ndarray]  # task -> (N, H, W) Grad-CAM in 0-1
    attention: np.ndarray | None  # (N, H, W) CBAM's spatial attention (sigmoid, 0-1), or None


class GradCam:
    """Grad-CAM maps (and the spatial attention map, where a layer has one) of a Keras model
    whose output is a dict of class probabilities per task (any facelab model)."""

    def __init__(self, model):
        import keras

        self.model = model
        # task names in the order of model.outputs (Keras flattens a dict by sorted keys)
        self.tasks = keras.tree.flatten({name: name for name in model.output}) \
            if isinstance(model.output, dict) else [model.name]
        self.input_size = tuple(model.inputs[0].shape[1:3])
        found = feature_model(model)
        if found is None:
            raise FacelabError(f"model {model.name}: no 4-D feature map that every output "
                               "depends on; Grad-CAM needs a convolutional backbone")
        #: input -> [feature map, one output per task, the input of each attention layer]
        self._features, self._attention_layers = found

    @property
    def feature_map_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the feature map the maps are computed on."""
        return tuple(self._features.outputs[0].shape[1:])

    def explain(self, images: np.ndarray, classes: dict[str, np.ndarray] | None = None,
                batch_size: int = 32) -> Explanations:
        """Maps for float images (N, H, W, C) in 0-255; each task's map explains ``classes[task]``
        (class indices, one per image), by default the predicted class."""
        if len(images) == 0:
            raise ValueError("no images to explain")
        parts = [self._explain_batch(images[start:start + batch_size],
                                     None if classes is None else
                                     {t: c[start:start + batch_size] for t, c in classes.items()})
                 for start in range(0, len(images), batch_size)]
        return Explanations(
            probabilities={t: np.concatenate([p.probabilities[t] for p in parts])
                           for t in self.tasks},
            explained={t: np.concatenate([p.explained[t] for p in parts]) for t in self.tasks},
            heatmaps={t: np.concatenate([p.heatmaps[t] for p in parts]) for t in self.tasks},
            attention=None if parts[0].attention is None else
            np.concatenate([p.attention for p in parts]))

    def _explain_batch(self, images, classes) -> Explanations:
        import tensorflow as tf

        images = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(images)  # records the graph even where every weight is frozen
            values = self._features(images, training=False)
            feature_map, outputs = values[0], dict(zip(self.tasks, values[1:1 + len(self.tasks)]))
            chosen = {task: tf.constant(np.asarray(classes[task]), tf.int32)
                      if classes is not None and task in classes
                      else tf.argmax(outputs[task], axis=-1, output_type=tf.int32)
                      for task in self.tasks}
            scores = {task: tf.reduce_sum(tf.gather(outputs[task], chosen[task], batch_dims=1))
                      for task in self.tasks}
        heatmaps = {task: self._resize(_cam(feature_map, tape.gradient(scores[task], feature_map)))
                    for task in self.tasks}
        del tape
        attention = None
        if self._attention_layers:  # the last attention layer before the heads
            spatial = self._attention_layers[-1].spatial_attention(values[-1])
            attention = self._resize(tf.clip_by_value(spatial[..., 0], 0.0, 1.0))
        return Explanations({t: np.asarray(outputs[t]) for t in self.tasks},
                            {t: np.asarray(chosen[t]) for t in self.tasks}, heatmaps, attention)

    def _resize(self, maps) -> np.ndarray:
        import tensorflow as tf

        resized = tf.image.resize(maps[..., None], self.input_size, method="bilinear")[..., 0]
        return np.clip(resized.numpy(), 0.0, 1.0)


def _cam(feature_map, gradients):
    """ReLU(sum over channels of (mean gradient) x map), scaled to 0-1 per image."""
    import tensorflow as tf

    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1))
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)  # no positive evidence: all zeros


# --------------------------------------------------------------------------------------------
# Finding the feature map in the graph
# --------------------------------------------------------------------------------------------

def _producer(tensor):
    """The graph node that made a symbolic tensor."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def _ancestors(node, seen: dict) -> dict:
    stack = [node]
    while stack:
        current = stack.pop()
        if id(current) not in seen:
            seen[id(current)] = current
            stack.extend(current.parent_nodes)
    return seen


def _depths(nodes: dict) -> dict[int, int]:
    """Longest path from an input to each node (inputs are 0), over ``nodes``."""
    depths: dict[int, int] = {}

    def depth(node) -> int:
        if id(node) not in depths:
            parents = [p for p in node.parent_nodes if id(p) in nodes]
            depths[id(node)] = 1 + max(map(depth, parents)) if parents else 0
        return depths[id(node)]

    for node in nodes.values():
        depth(node)
    return depths


def _is_map(node) -> bool:
    return len(node.output_tensors) == 1 and len(node.output_tensors[0].shape) == 4


def _is_nested_model(node) -> bool:
    import keras

    return isinstance(node.operation, keras.Model) and not node.is_input


def feature_model(model):
    """``(keras.Model, attention layers)``: a model from ``model.inputs`` to the feature map,
    ``model.outputs`` (flat, in Keras's order), and the input of each attention layer with a
    ``spatial_attention`` method at or before the map; None when the model has no 4-D map
    that every output depends on. The new model shares the original layers and weights."""
    import keras

    outputs = model.outputs
    per_output = [_ancestors(_producer(t), {}) for t in outputs]
    shared = {key: node for key, node in per_output[0].items()
              if all(key in other for other in per_output[1:])}
    depths = _depths(shared)
    candidates = sorted((node for node in shared.values() if not node.is_input
                         and (_is_map(node) or _is_nested_model(node))),
                        key=lambda node: depths[id(node)], reverse=True)
    for node in candidates:
        if _is_map(node):
            attention = sorted((n for n in shared.values()
                                if hasattr(n.operation, "spatial_attention")
                                and depths[id(n)] <= depths[id(node)]),
                               key=lambda n: depths[id(n)])
            return (keras.Model(model.inputs, [node.output_tensors[0], *outputs,
                                               *(n.input_tensors[0] for n in attention)]),
                    [n.operation for n in attention])
        nested = node.operation
        inner = feature_model(nested)
        if inner is None:
            continue
        # Rebuilt as: the part before the nested model, the nested model cut at its map (the
        # recursion), and the part after it, each a functional model over the original layers.
        inner_model, layers = inner
        fresh = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in model.inputs]
        values = inner_model(_apply(model.inputs, node.input_tensors, fresh))
        count = len(nested.outputs)
        after = _apply(node.output_tensors, outputs, values[1:1 + count])
        return keras.Model(fresh, [values[0], *after, *values[1 + count:]]), layers
    return None


def _apply(inputs: list, outputs: list, values: list) -> list:
    """The part of a graph from ``inputs`` to ``outputs``, applied to ``values``."""
    import keras

    positions = {id(t): i for i, t in enumerate(inputs)}
    if all(id(t) in positions for t in outputs):  # nothing in between (Keras refuses Model(x, x))
        return [values[positions[id(t)]] for t in outputs]
    return keras.tree.flatten(keras.Model(inputs, outputs)(values))
