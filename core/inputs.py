"""The input pipeline: tf.data batches synthesised from uint8 crops and a plan, in TF ops."""

from __future__ import annotations

import inspect

import keras
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
                 first_epoch: int = 0, first_batch: int = 0, epochs: int | None = 1
                 ) -> tf.data.Dataset:
    """Batches of (float32 images in 0-255, {task: int64 labels}), for ``epochs`` passes over
    the plan (None: endless; train with ``steps_per_epoch``).

    ``images``: the uint8 crops, a numpy array or ``host_tensor(images)``. A dataset of row
    numbers per batch is mapped, in parallel and in order, to the batch: the plan's base rows
    gathered, its synthetic rows interpolated towards their neighbours in one XLA-compiled pass
    with ``BalancePlan.materialize``'s arithmetic (bit for bit imblearn's SMOTE rows), as float32;
    a balanced set never exists whole in memory.

    ``augment``: Keras layers applied after the gather. Keras's image-preprocessing layers (flip,
    rotation, zoom, ... and ``keras.Sequential`` stacks of them) draw from seeds made of
    ``seed``, the epoch and the batch's number, in the same parallel map: the same
    augmentations every run, and after a resume. Other layers draw from their own seed
    generators, in one sequential map after it.

    A shuffled set orders pass ``e`` (``first_epoch``, ``first_epoch + 1``, ...) with the seed
    ``seed + e``. The epoch is part of the data, not a count of how often the set was iterated:
    every iterator starts at ``first_epoch`` (Keras makes an extra one to build a model under a
    distribution strategy), and a run resumed after ``first_epoch`` epochs shuffles as the
    uninterrupted run did. ``first_batch``: batches of the first epoch already read (a resumed
    run whose epochs were not whole passes); skipped as row numbers, never synthesised.
    """
    n = len(plan)
    per_epoch = -(-n // batch_size)
    rows = _row_batches(n, batch_size, seed if shuffle else None, first_epoch, epochs)
    rows = rows.skip(first_batch).apply(tf.data.experimental.assert_cardinality(
        tf.data.INFINITE_CARDINALITY if epochs is None else per_epoch * epochs - first_batch))
    synthesise = _synthesiser(host_tensor(images), labels, plan)
    seeded = _seeded_layers(augment) if augment else None

    def batch(epoch, index, batch_rows):
        x, y = synthesise(batch_rows)
        if seeded:
            # seeds of the batch's own (the seed, its epoch and number): batches are augmented
            # in parallel, and a seed gives the same augmentations every run and resume
            x = _augment(x, seeded, _batch_key(seed, epoch, index))
        return x, y

    dataset = rows.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment and seeded is None:
        layers = list(augment)

        def apply(x, y):
            for layer in layers:
                x = layer(x, training=True)
            return x, y

        # layers that draw from their own seed generators: one sequential map, so the draws
        # come batch after batch in order (a parallel map's draw order varies between runs)
        dataset = dataset.map(apply)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _row_batches(n: int, batch_size: int, seed: int | None, first_epoch: int,
                 epochs: int | None) -> tf.data.Dataset:
    """(epoch, batch number in the epoch, plan rows), epoch after epoch from ``first_epoch``;
    with a ``seed``, each epoch's rows in the order ``seed + epoch`` draws, else in plan order.

    Only the permutation (8 bytes a row, once per epoch) crosses from numpy; the images never
    do. numpy's generator, not TF's, so an order is the same on every TensorFlow version.
    """
    def permutation(epoch):
        order = np.arange(n, dtype=np.int64)
        np.random.default_rng(seed + int(epoch)).shuffle(order)
        return order

    def batches(epoch):
        order = tf.range(n, dtype=tf.int64) if seed is None else tf.ensure_shape(
            tf.numpy_function(permutation, [epoch], tf.int64), [n])
        numbered = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
        return numbered.map(lambda index, rows: (epoch, index, rows))

    numbers = (tf.data.Dataset.counter(first_epoch) if epochs is None
               else tf.data.Dataset.range(first_epoch, first_epoch + epochs))
    return numbers.flat_map(batches)


def _seeded_layers(layers: list) -> list | None:
    """The augmentation layers as Keras image-preprocessing layers that draw from a seed they
    are given (``get_random_transformation(x, training, seed)`` and ``transform_images``),
    ``keras.Sequential`` stacks flattened; None if one of them cannot (it then draws from its
    own seed generator)."""
    flat = []
    for layer in layers:
        draw = getattr(layer, "get_random_transformation", None)
        if draw is not None and hasattr(layer, "transform_images") \
                and "seed" in inspect.signature(draw).parameters:
            flat.append(layer)
        elif isinstance(getattr(layer, "layers", None), list):  # a keras.Sequential
            inner = _seeded_layers(layer.layers)
            if inner is None:
                return None
            flat += inner
        else:
            return None
    return flat


def _batch_key(seed: int, epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), epoch)
    return tf.random.experimental.stateless_fold_in(key, index)


def _augment(x: tf.Tensor, layers: list, key: tf.Tensor) -> tf.Tensor:
    seeds = _BatchSeeds(key)
    for layer in layers:
        x = layer.transform_images(
            x, layer.get_random_transformation(x, training=True, seed=seeds), training=True)
    return x


class _BatchSeeds(keras.random.SeedGenerator):
    """A batch's seeds for Keras's random layers, which draw through ``SeedGenerator.next``:
    the batch's key folded with the number of the draw, without state. Not a real generator (no
    ``SeedGenerator.__init__``, so no state variable a parallel map would share)."""

    def __init__(self, key: tf.Tensor):  # the parent's __init__ makes the state variable
        self.key, self.draws = key, 0

    def next(self, ordered=True):
        self.draws += 1  # counted while the map function is traced: a constant per draw
        return tf.random.experimental.stateless_fold_in(self.key, self.draws)


def _synthesiser(images: tf.Tensor, labels: dict[str, np.ndarray], plan: BalancePlan):
    """plan rows (int64, batch) -> (float32 images, {task: labels}), all in TF ops."""
    if images.dtype != tf.uint8:
        raise ValueError(f"the input pipeline takes uint8 crops, not {images.dtype.name}")
    synthetic = plan.synthetic
    with tf.device("/cpu:0"):
        base = tf.constant(plan.base, tf.int64)
        columns = {task: tf.constant(column, tf.int64) for task, column in labels.items()}
        if synthetic.any():
            # an original row (step 0 or its own neighbour) is its base row exactly, as
            # materialize's arithmetic gives it: here its step is 0 and its neighbour its base
            neighbour = tf.constant(np.where(synthetic, plan.neighbour, plan.base), tf.int64)
            step = np.where(synthetic, plan.step, 0).astype(
                np.result_type(plan.step.dtype, np.float32))
            high, low = (tf.constant(part) for part in split_step(step))

    def synthesise(rows):
        bases = tf.gather(base, rows)
        targets = {task: tf.gather(column, bases) for task, column in columns.items()}
        if not synthetic.any():
            return tf.cast(tf.gather(images, bases), tf.float32), targets
        return _mix(images, bases, tf.gather(neighbour, rows), tf.gather(high, rows),
                    tf.gather(low, rows)), targets

    return synthesise


def split_step(step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``step`` as ``high + low`` (exactly), ``high`` without its 9 lowest mantissa bits.

    For an integer difference ``d`` with ``|d| < 2**8`` both ``high * d`` and ``low * d`` are
    then exact, so ``high * d + low * d`` rounds once, to ``step * d`` as numpy rounds it,
    whether or not the compiler fuses a multiply into the add (XLA's CPU code generator does,
    and a fused ``start + step * d`` rounds differently from numpy next to float32 rounding
    midpoints: rarely, but not never; see docs/scaling.md).
    """
    step = np.asarray(step)
    bits = np.dtype(f"int{step.dtype.itemsize * 8}")
    high = (step.view(bits) & bits.type(~0x1FF)).view(step.dtype)
    return high, step - high


@tf.function(jit_compile=True)
def _mix(images: tf.Tensor, bases: tf.Tensor, neighbours: tf.Tensor, high: tf.Tensor,
         low: tf.Tensor) -> tf.Tensor:
    """float32 ``start + (high + low) * (end - start)`` for the uint8 rows ``start`` (``bases``)
    and ``end`` (``neighbours``) of ``images``, in one XLA loop that also gathers them.

    Bit for bit ``BalancePlan.materialize``'s arithmetic: in the step's dtype (float64 for
    SMOTE), in which the difference of two uint8 pixels is exact, rounded to float32 at the
    end. XLA fuses the gathers, casts, products and sums into one pass over the batch; TF's
    kernels, one per operation with a float64 temporary each, took 3.8x as long at 224 px.
    """
    per_row = [-1] + [1] * (len(images.shape) - 1)
    first = tf.cast(tf.gather(images, bases), high.dtype)
    difference = tf.cast(tf.gather(images, neighbours), high.dtype) - first
    product = tf.reshape(high, per_row) * difference + tf.reshape(low, per_row) * difference
    return tf.cast(first + product, tf.float32)
