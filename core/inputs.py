"""The input pipeline: tf.data batches synthesised from uint8 crops and a plan, in TF ops."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from facelab.data import BalancePlan


def host_tensor(images) -> tf.Tensor:
    """The images as one tensor in host memory (a copy of a numpy array; a tensor is kept).

    tf.data functions capture it by reference, so it is never embedded in a graph as a constant
    (graphs stop at 2 GB; the race paper's 224x224 crops are 2.4 GB). Convert once and pass the
    tensor to every ``make_dataset`` call that shares the images, so they share one copy.
    """
    if isinstance(images, tf.Tensor):
        return images
    with tf.device("/cpu:0"):  # tf.data runs on the host; on a GPU machine eager would go there
        return tf.convert_to_tensor(np.asarray(images))


def make_dataset(images, labels: dict[str, np.ndarray], plan: BalancePlan,
                 batch_size: int, *, shuffle: bool, seed: int, augment: list | None = None,
                 first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of (float32 images in 0-255, {task: int64 labels}).

    ``images``: the uint8 crops, a numpy array or ``host_tensor(images)``. A dataset of row
    numbers per batch is mapped, in parallel and in order, to the batch: the plan's base rows
    gathered and cast to float32, its synthetic rows interpolated towards their neighbours in TF
    ops with ``BalancePlan.materialize``'s arithmetic (bit for bit imblearn's SMOTE rows), so a
    balanced set never exists whole in memory. Augmentation layers run on training batches
    only, after the gather, in one sequential map (deterministic given the seed; the prefetch
    still overlaps it with training). A shuffled set is shuffled per epoch with ``seed + epoch``
    (epochs from 0, each pass over the set is the next one), so a run resumed after
    ``first_epoch`` epochs shuffles as the uninterrupted run did.
    """
    n = len(plan)
    if shuffle:
        rows = _shuffled_row_batches(n, batch_size, seed, first_epoch)
    else:
        rows = tf.data.Dataset.range(n).batch(batch_size)
    rows = rows.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    dataset = rows.map(_synthesiser(host_tensor(images), labels, plan),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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


def _shuffled_row_batches(n: int, batch_size: int, seed: int, first_epoch: int
                          ) -> tf.data.Dataset:
    """Batches of plan rows in each epoch's order: a new permutation each time it is iterated.

    Keras iterates a finite dataset afresh every epoch, so the epoch is counted in Python, by
    the generator's calls; only the permutation (8 bytes a row, once per epoch) crosses from
    Python, the images never do.
    """
    epoch = [first_epoch]

    def orders():
        order = np.arange(n, dtype=np.int64)
        np.random.default_rng(seed + epoch[0]).shuffle(order)
        epoch[0] += 1
        yield order

    permutations = tf.data.Dataset.from_generator(
        orders, output_signature=tf.TensorSpec((n,), tf.int64))
    return permutations.flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))


def _synthesiser(images: tf.Tensor, labels: dict[str, np.ndarray], plan: BalancePlan):
    """plan rows (int64, batch) -> (float32 images, {task: labels}), all in TF ops."""
    with tf.device("/cpu:0"):
        base = tf.constant(plan.base, tf.int64)
        columns = {task: tf.constant(column, tf.int64) for task, column in labels.items()}
        has_synthetic = bool(plan.synthetic.any())
        if has_synthetic:
            is_synthetic = tf.constant(plan.synthetic)
            neighbour = tf.constant(plan.neighbour, tf.int64)
            math_dtype = tf.as_dtype(np.result_type(plan.step.dtype, np.float32))
            step = tf.constant(plan.step, math_dtype)

    def synthesise(rows):
        bases = tf.gather(base, rows)
        x = tf.cast(tf.gather(images, bases), tf.float32)
        if has_synthetic:
            # only synthetic rows are interpolated: an original row (step 0 or its own
            # neighbour) is its base row exactly, as materialize's arithmetic gives it
            where = tf.where(tf.gather(is_synthetic, rows))[:, 0]
            picked = tf.gather(rows, where)
            x = tf.tensor_scatter_nd_update(x, where[:, None], _interpolate(
                tf.gather(images, tf.gather(base, picked)),
                tf.gather(images, tf.gather(neighbour, picked)),
                tf.gather(step, picked), math_dtype))
        return x, {task: tf.gather(column, bases) for task, column in columns.items()}

    return synthesise


def _interpolate(start: tf.Tensor, end: tf.Tensor, step: tf.Tensor, math_dtype: tf.DType
                 ) -> tf.Tensor:
    """float32 ``start + step * (end - start)`` per row, with materialize's dtypes and order."""
    shape = tf.shape(start)
    flat = [tf.cast(tf.reshape(rows, [shape[0], -1]), tf.float32) for rows in (start, end)]
    # numpy's promotion: float32 differences times the step's dtype (float64 for SMOTE); rows
    # flattened, as a (rows, 1) step broadcasts ~4x faster than a (rows, 1, 1, 1) one here
    mixed = tf.cast(flat[0], math_dtype) + step[:, None] * tf.cast(flat[1] - flat[0], math_dtype)
    return tf.reshape(tf.cast(mixed, tf.float32), shape)
