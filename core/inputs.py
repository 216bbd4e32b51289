"""The input pipeline: tf.data batches synthesised from uint8 crops and a plan."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from facelab.data import BalancePlan


def make_dataset(images: np.ndarray, labels: dict[str, np.ndarray], plan: BalancePlan,
                 batch_size: int, *, shuffle: bool, seed: int, augment: list | None = None,
                 first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of (float32 images in 0-255, {task: int labels}).

    Rows are synthesised from the plan a batch at a time (``BalancePlan.materialize``), so a
    SMOTE-balanced set never exists whole in memory. Augmentation layers run on training batches
    only, in tf.data, on the fly, in one sequential map (deterministic given the seed; the
    prefetch still overlaps it with training). A shuffled set is shuffled per epoch with ``seed + epoch``
    (epochs from 0, each pass over the set is the next one), so a run resumed after
    ``first_epoch`` epochs shuffles as the uninterrupted run did.
    """
    n = len(plan)
    shape = images.shape[1:]
    epoch = [first_epoch]

    def batches():
        order = np.arange(n)
        if shuffle:
            np.random.default_rng(seed + epoch[0]).shuffle(order)
            epoch[0] += 1
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            x = plan.materialize(images, rows)
            y = {task: column[plan.base[rows]] for task, column in labels.items()}
            yield x, y

    signature = (tf.TensorSpec((None, *shape), tf.float32),
                 {task: tf.TensorSpec((None,), tf.int64) for task in labels})
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    if augment:
        layers = list(augment)

        def apply(x, y):
            for layer in layers:
                x = layer(x, training=True)
            return x, y

        # one sequential map: the layers' seed generators draw batch after batch in order, so
        # a seed gives the same augmentations every run (a parallel map's draw order varies)
        dataset = dataset.map(apply)
    return dataset.prefetch(tf.data.AUTOTUNE)
