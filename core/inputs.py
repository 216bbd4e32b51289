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
                 first_pass: int = 0, first_batch: int = 0, passes: int | None = 1
                 ) -> tf.data.Dataset:
    """Batches of (float32 images in 0-255, {task: int64 labels}), for ``passes`` passes over
    the plan (None: endless; train with ``steps_per_epoch``).

    ``images``: the uint8 crops, a numpy array or ``host_tensor(images)``. A dataset of row
    numbers per batch is mapped, in parallel and in order, to the batch: the plan's base rows
    gathered, its synthetic rows interpolated towards their neighbours in one XLA-compiled pass
    with ``BalancePlan.materialize``'s arithmetic (bit for bit imblearn's SMOTE rows), as float32;
    a balanced set never exists whole in memory.

    ``augment``: Keras layers applied in order after the gather. The leading ones that draw only
    from a seed they are given (Keras's image-preprocessing layers: flip, rotation, zoom, ...,
    and ``keras.Sequential`` stacks of them) draw from seeds made of ``seed``, the pass and the
    batch's number, in the same parallel map: the same augmentations every run, and after a
    resume. From the first layer that cannot on (RandAugment, keras-cv's, a layer with its own
    seed generator), the layers run in one sequential map after it, drawing from their own
    generators batch after batch.

    A shuffled set orders pass ``p`` (``first_pass``, ``first_pass + 1``, ...) with the seed
    ``seed + p``. The pass is part of the data, not a count of how often the set was iterated:
    every iterator starts at ``first_pass`` (Keras makes an extra one to build a model under a
    distribution strategy), so a resumed run reads on as the uninterrupted run did.
    ``first_batch``: batches of the first pass already read (a resumed run whose epochs were not
    whole passes); skipped as row numbers, never synthesised.
    """
    n = len(plan)
    per_pass = batches_per_pass(n, batch_size)
    total = None if passes is None else per_pass * passes
    last = per_pass - 1 if total is None else total  # an endless set starts inside a pass
    if (n == 0 and passes is None) or not 0 <= first_batch <= last:
        raise ValueError(f"cannot start at batch {first_batch} of {n} rows in batches of "
                         f"{batch_size}, {passes or 'endless'} passes")
    rows = _row_batches(n, batch_size, seed if shuffle else None, first_pass, passes)
    rows = rows.skip(first_batch).apply(tf.data.experimental.assert_cardinality(
        tf.data.INFINITE_CARDINALITY if total is None else total - first_batch))
    images = host_tensor(images)
    synthesise = _synthesiser(images, labels, plan)
    # the leading layers that draw only from a seed they are given run in the parallel map;
    # from the first that cannot on, the layers run after it, in order
    seeded, rest = [], list(augment or [])
    while rest and (leaves := _seeded_leaves(rest[0], tuple(images.shape[1:]))) is not None:
        seeded += leaves
        rest.pop(0)

    def batch(number, index, batch_rows):
        x, y = synthesise(batch_rows)
        if seeded:
            # seeds of the batch's own (the seed, its pass and number): batches are augmented
            # in parallel, and a seed gives the same augmentations every run and resume
            x = _augment(x, seeded, _batch_key(seed, number, index))
        return x, y

    dataset = rows.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if rest:
        def apply(x, y):
            for layer in rest:
                x = layer(x, training=True)
            return x, y

        # layers that draw from their own seed generators: one sequential map, so the draws
        # come batch after batch in order (a parallel map's draw order varies between runs)
        dataset = dataset.map(apply)
    return dataset.prefetch(tf.data.AUTOTUNE)


def batches_per_pass(rows: int, batch_size: int) -> int:
    """Batches in one pass over ``rows`` plan rows, the last one partial."""
    return -(-rows // batch_size)


def position(rows: int, batch_size: int, batches: int) -> tuple[int, int]:
    """(pass, batch in that pass) after ``batches`` batches of an endless set of ``rows`` rows:
    where a run resumed after them reads on (``first_pass``, ``first_batch``)."""
    per_pass = batches_per_pass(rows, batch_size)
    return divmod(batches, per_pass) if per_pass else (0, 0)


def rows_read(rows: int, batch_size: int, batches: int) -> int:
    """Plan rows in the first ``batches`` batches of an endless set of ``rows`` rows (each pass
    ends with a partial batch)."""
    passes, rest = position(rows, batch_size, batches)
    return passes * rows + rest * batch_size


def _row_batches(n: int, batch_size: int, seed: int | None, first_pass: int,
                 passes: int | None) -> tf.data.Dataset:
    """(pass, batch number in the pass, plan rows), pass after pass from ``first_pass``; with a
    ``seed``, each pass's rows in the order ``seed + pass`` draws, else in plan order.

    Only the permutation (8 bytes a row, once per pass) crosses from numpy; the images never
    do. numpy's generator, not TF's, so an order is the same on every TensorFlow version.
    """
    def permutation(number):
        order = np.arange(n, dtype=np.int64)
        np.random.default_rng(seed + int(number)).shuffle(order)
        return order

    def batches(number):
        order = tf.range(n, dtype=tf.int64) if seed is None else tf.ensure_shape(
            tf.numpy_function(permutation, [number], tf.int64), [n])
        numbered = tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate()
        return numbered.map(lambda index, rows: (number, index, rows))

    numbers = (tf.data.Dataset.counter(first_pass) if passes is None
               else tf.data.Dataset.range(first_pass, first_pass + passes))
    return numbers.flat_map(batches)


def _seeded_leaves(layer, shape: tuple[int, ...]) -> list | None:
    """``layer`` as Keras image-preprocessing layers that draw only from a seed they are given
    (a ``keras.Sequential`` stack flattened), or None if it, or a layer of its stack, cannot."""
    if isinstance(getattr(layer, "layers", None), list) \
            and not hasattr(layer, "get_random_transformation"):  # a keras.Sequential
        leaves = [_seeded_leaves(inner, shape) for inner in layer.layers]
        return None if None in leaves else [leaf for part in leaves for leaf in part]
    return [layer] if _draws_from_given_seed(layer, shape) else None


def _draws_from_given_seed(layer, shape: tuple[int, ...]) -> bool:
    """Whether ``layer`` takes a seed (``get_random_transformation(x, training, seed)`` and
    ``transform_images``) and draws from it alone: applied twice with one seed to a small batch
    of ``shape`` images, it gives the same images and moves none of its own seed generators.
    (Keras's RandAugment, AugMix and RandomColorJitter accept a seed but draw from their own
    generators too.) The layer's variables are restored afterwards."""
    draw = getattr(layer, "get_random_transformation", None)
    if draw is None or not hasattr(layer, "transform_images") \
            or "seed" not in inspect.signature(draw).parameters:
        return False
    saved = [variable.numpy() for variable in layer.variables]
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (2, *shape)), tf.float32)
    key = tf.constant([1, 2], tf.int64)
    try:
        first, second = (_augment(x, [layer], key).numpy() for _ in range(2))
        moved = any(not np.array_equal(variable.numpy(), value)
                    for variable, value in zip(layer.variables, saved))
    except Exception:  # it cannot run this way: it runs as layer(x) in the sequential map
        return False
    finally:
        for variable, value in zip(layer.variables, saved):
            variable.assign(value)
    return np.array_equal(first, second) and not moved


def _batch_key(seed: int, number: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """A batch's random key: ``seed``, its pass ``number`` and its ``index`` in the pass."""
    key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), number)
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
