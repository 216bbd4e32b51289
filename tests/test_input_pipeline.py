"""The tf.data input pipeline (``facelab.inputs.make_dataset``): SMOTE rows synthesised in TF ops
equal imblearn's bit for bit, also where a fused multiply-add would round differently; identity
plans give the uint8 rows as float32 in each epoch's order; orders depend on the seed and epoch
only (not on how often a set was iterated), so a resumed pipeline continues the uninterrupted
one; cardinality is known; augmentation runs only when given."""

from __future__ import annotations

from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf
from imblearn.over_sampling import SMOTE

from facelab.context import BuildContext
from facelab.data import BalancePlan
from facelab.inputs import host_tensor, make_dataset
from facelab.manager import get_registry


def smote_plan(images: np.ndarray, labels: np.ndarray, seed: int, **params) -> BalancePlan:
    component = get_registry().get("balancer", "smote")
    smote = component.factory(component.validate(params, "data.balancer"), BuildContext("/tmp"))
    return smote.plan(images, labels, seed)


def tiny_images(seed: int, n: int = 90, side: int = 5):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
            rng.choice(3, n, p=[0.6, 0.3, 0.1]))


def epoch_of(dataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One pass over a dataset: all images and labels, concatenated."""
    xs, ys = [], {}
    for x, y in dataset:
        xs.append(x.numpy())
        for task, column in y.items():
            ys.setdefault(task, []).append(column.numpy())
    return np.concatenate(xs), {task: np.concatenate(parts) for task, parts in ys.items()}


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    order = np.arange(n)
    np.random.default_rng(seed + epoch).shuffle(order)
    return order


@pytest.mark.parametrize("shuffle", [False, True])
def test_smote_batches_equal_imblearn_bit_for_bit(shuffle):
    images, labels = tiny_images(3)
    plan = smote_plan(images, labels, 11, k_neighbors=3)
    expected_x, expected_y = SMOTE(k_neighbors=3, random_state=11).fit_resample(
        images.reshape(len(images), -1).astype(np.float32), labels)
    assert plan.synthetic.sum() > len(images) // 2  # most of a batch is synthetic
    dataset = make_dataset(images, {"race": labels}, plan, 16, shuffle=shuffle, seed=5,
                           passes=2)
    x, y = epoch_of(dataset)
    assert x.dtype == np.float32 and x.shape == (2 * len(plan), *images.shape[1:])
    for epoch in range(2):
        order = epoch_order(len(plan), 5, epoch) if shuffle else np.arange(len(plan))
        rows = slice(epoch * len(plan), (epoch + 1) * len(plan))
        assert np.array_equal(x[rows].reshape(len(plan), -1), expected_x[order])  # not allclose
        assert np.array_equal(y["race"][rows], expected_y[order])


def fma_sensitive_cases(count: int, seed: int = 1) -> list[tuple[int, int, float]]:
    """(start, end, step) pixels and steps where ``start + step * (end - start)`` rounds to a
    different float32 when the multiply is fused into the add (one rounding, not two): the
    exact value is put next to a float32 rounding midpoint."""
    rng, cases = np.random.default_rng(seed), []
    while len(cases) < count:
        start, end = (int(v) for v in rng.integers(0, 256, 2))
        if start == end:
            continue
        x = np.float32(start + (end - start) * rng.uniform())
        midpoint = (Fraction(float(x)) + Fraction(float(np.nextafter(x, np.float32(512))))) / 2
        step = float((midpoint - start) / (end - start))
        separate = np.float32(np.float64(start) + np.float64(step) * np.float64(end - start))
        fused = np.float32(float(start + Fraction(step) * (end - start)))
        if 0 <= step < 1 and separate != fused:
            cases.append((start, end, step))
    return cases


def test_synthetic_pixels_round_as_numpy_does_where_a_fused_multiply_add_would_not():
    cases = fma_sensitive_cases(24)
    images = np.repeat(np.arange(256, dtype=np.uint8), 2 * 2 * 3).reshape(256, 2, 2, 3)
    plan = BalancePlan(np.array([c[0] for c in cases]), np.array([c[1] for c in cases]),
                       np.array([c[2] for c in cases]))
    x, _ = epoch_of(make_dataset(images, {"race": np.zeros(256, np.int64)}, plan, 8,
                                 shuffle=False, seed=0))
    assert np.array_equal(x.view(np.uint32), plan.materialize(images).view(np.uint32))


def test_identity_plans_give_the_rows_as_float32_in_the_epochs_order():
    images, labels = tiny_images(4, n=50)
    gender = labels[::-1].copy()
    for epoch in range(2):
        order = epoch_order(50, 9, epoch)
        x, y = epoch_of(make_dataset(host_tensor(images), {"race": labels, "gender": gender},
                                     BalancePlan.identity(50), 8, shuffle=True, seed=9,
                                     first_pass=epoch))
        assert np.array_equal(x, images[order].astype(np.float32))
        assert y["race"].dtype == np.int64
        assert np.array_equal(y["race"], labels[order])
        assert np.array_equal(y["gender"], gender[order])
    rows = np.array([7, 3, 3, 40])  # a subset plan (e.g. a split) keeps its rows' order
    x, y = epoch_of(make_dataset(images, {"race": labels}, BalancePlan.of_rows(rows), 3,
                                 shuffle=False, seed=9))
    assert np.array_equal(x, images[rows].astype(np.float32))
    assert np.array_equal(y["race"], labels[rows])


def test_same_seed_and_epoch_give_the_same_batches_and_a_resumed_set_continues():
    images, labels = tiny_images(5)
    plan = smote_plan(images, labels, 2)

    def epochs(seed: int, first_epoch: int, count: int | None, take: int = 4
               ) -> list[np.ndarray]:
        dataset = make_dataset(images, {"race": labels}, plan, 32, shuffle=True, seed=seed,
                               first_pass=first_epoch, passes=count)
        batches = -(-len(plan) // 32)
        x = epoch_of(dataset.take(batches * take))[0]
        return np.split(x, len(x) // len(plan))

    uninterrupted = epochs(7, 0, 4)
    assert len(uninterrupted) == 4
    assert all(np.array_equal(a, b) for a, b in zip(epochs(7, 0, 4), uninterrupted))
    assert not np.array_equal(uninterrupted[0], uninterrupted[1])  # each epoch reshuffles
    assert not np.array_equal(epochs(8, 0, 1)[0], uninterrupted[0])
    resumed = epochs(7, 2, 2)  # resumed after two epochs
    assert all(np.array_equal(a, b) for a, b in zip(resumed, uninterrupted[2:]))
    endless = epochs(7, 0, None)  # training's set: epoch after epoch from one iterator
    assert all(np.array_equal(a, b) for a, b in zip(endless, uninterrupted))


def test_a_set_can_start_inside_an_epoch():
    # a run resumed after epochs of train.steps_per_epoch batches, not whole passes
    images, labels = tiny_images(5, n=40)

    def stream(**start):
        return make_dataset(images, {"race": labels}, BalancePlan.identity(40), 8,
                            shuffle=True, seed=3, passes=None, **start)

    whole = epoch_of(stream().take(15))[0]  # 5 batches a pass
    later = epoch_of(stream(first_pass=1, first_batch=2).take(8))[0]
    assert np.array_equal(later, whole[(5 + 2) * 8:])


@pytest.mark.parametrize("rows, batches", [(40, 12), (42, 7), (42, 6), (5, 3)])
def test_rows_read_counts_what_an_endless_set_gives(rows, batches):
    from facelab.inputs import rows_read

    images, labels = tiny_images(5, n=rows, side=2)
    dataset = make_dataset(images, {"race": labels}, BalancePlan.identity(rows), 8,
                           shuffle=True, seed=0, passes=None)
    assert rows_read(rows, 8, batches) == sum(len(x) for x, _ in dataset.take(batches))


def test_every_iterator_of_a_set_starts_at_its_first_epoch():
    # Keras under a tf.distribute strategy reads one batch from an iterator of its own before
    # training; a set that counted its iterations would then start training an epoch ahead
    images, labels = tiny_images(5, n=40)
    dataset = make_dataset(images, {"race": labels}, BalancePlan.identity(40), 8,
                           shuffle=True, seed=3, first_pass=1, passes=None)
    next(iter(dataset))
    x, _ = epoch_of(dataset.take(5))
    assert np.array_equal(x, images[epoch_order(40, 3, 1)].astype(np.float32))


@pytest.mark.parametrize("shuffle", [False, True])
def test_cardinality_is_known(shuffle):
    images, labels = tiny_images(6, n=45)
    dataset = make_dataset(images, {"race": labels}, BalancePlan.identity(45), 16,
                           shuffle=shuffle, seed=0, augment=[keras.layers.RandomFlip(seed=1)])
    assert dataset.cardinality().numpy() == 3
    assert [len(x) for x, _ in dataset] == [16, 16, 13]
    assert make_dataset(images, {"race": labels}, BalancePlan.identity(45), 16, shuffle=shuffle,
                        seed=0, passes=2).cardinality().numpy() == 6
    assert make_dataset(images, {"race": labels}, BalancePlan.identity(45), 16, shuffle=shuffle,
                        seed=0, passes=None).cardinality().numpy() == tf.data.INFINITE_CARDINALITY


def test_augmentation_runs_only_when_given():
    images, labels = tiny_images(7, n=40)
    rows = images.astype(np.float32)
    plain, _ = epoch_of(make_dataset(images, {"race": labels}, BalancePlan.identity(40), 8,
                                     shuffle=False, seed=0))
    assert np.array_equal(plain, rows)
    flip = keras.layers.RandomFlip("horizontal", seed=3)
    augmented, y = epoch_of(make_dataset(images, {"race": labels}, BalancePlan.identity(40), 8,
                                         shuffle=False, seed=0, augment=[flip]))
    flipped = np.array([np.array_equal(a, r[:, ::-1]) for a, r in zip(augmented, rows)])
    kept = np.array([np.array_equal(a, r) for a, r in zip(augmented, rows)])
    assert (flipped | kept).all() and flipped.any() and kept.any()
    assert np.array_equal(y["race"], labels)


def test_keras_image_layers_draw_per_batch_seeds_so_runs_and_resumes_repeat():
    """Keras's image layers (and Sequential stacks of them, as ``random-crop`` builds) draw
    from seeds of the seed, epoch and batch number, in the parallel map: fresh layers give the
    same augmentations, a resumed stream the uninterrupted one's, another seed others."""
    images, labels = tiny_images(8, n=40, side=8)

    def stream(seed: int, **start) -> np.ndarray:
        layers = [keras.layers.RandomFlip("horizontal"), keras.Sequential([
            keras.layers.RandomTranslation(0.2, 0.2), keras.layers.RandomZoom(0.2)])]
        dataset = make_dataset(images, {"race": labels}, BalancePlan.identity(40), 8,
                               shuffle=True, seed=seed, augment=layers, passes=None, **start)
        return epoch_of(dataset.take(10 if not start else 3))[0]  # 5 batches a pass

    first = stream(4)
    assert np.array_equal(stream(4), first)
    assert np.array_equal(stream(4, first_pass=1, first_batch=2), first[7 * 8:])
    assert not np.array_equal(stream(5)[:40], first[:40])
    unaugmented = images[epoch_order(40, 4, 0)].astype(np.float32)
    assert not np.array_equal(first[:40], unaugmented)
    # the same rows in the next epoch are augmented anew
    order = [epoch_order(40, 4, e) for e in range(2)]
    again = first[40:][np.argsort(order[1])][order[0]]
    assert not np.array_equal(again, first[:40])


def test_layers_that_draw_from_their_own_generators_run_in_order_after_the_seeded_ones():
    """RandAugment takes a seed argument but draws from its own generators too: it must not
    join the parallel map (where its draws would come in a varying order), so two fresh
    copies with one seed augment alike; a flip before it still takes the batch's seeds, and a
    layer with no seed argument at all still runs."""
    images, labels = tiny_images(9, n=32, side=8)

    def epoch(*layers) -> np.ndarray:
        return epoch_of(make_dataset(images, {"race": labels}, BalancePlan.identity(32), 8,
                                     shuffle=True, seed=2, augment=list(layers)))[0]

    def rand_augment():
        return keras.layers.RandAugment(value_range=(0, 255), seed=1)

    first = epoch(keras.layers.RandomFlip("horizontal"), rand_augment())
    assert np.array_equal(epoch(keras.layers.RandomFlip("horizontal"), rand_augment()), first)
    assert not np.array_equal(first, images[epoch_order(32, 2, 0)].astype(np.float32))
    noise = epoch(keras.layers.GaussianNoise(1.0, seed=1))  # no seed can be passed in
    assert noise.shape == (32, 8, 8, 3)
    assert not np.array_equal(noise, images[epoch_order(32, 2, 0)].astype(np.float32))


SEEDED = {
    "flip": lambda: keras.layers.RandomFlip("horizontal"),
    "rotation": lambda: keras.layers.RandomRotation(0.1),
    "zoom": lambda: keras.layers.RandomZoom(0.1),
    "translation": lambda: keras.layers.RandomTranslation(0.1, 0.1),
    "contrast": lambda: keras.layers.RandomContrast(0.2),
    "brightness": lambda: keras.layers.RandomBrightness(0.2, value_range=(0, 255)),
    "a Sequential stack": lambda: keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1),
                                                    keras.layers.RandomZoom(0.1)]),
}
OWN_GENERATORS = {
    "RandAugment": lambda: keras.layers.RandAugment(value_range=(0, 255)),
    "AugMix": lambda: keras.layers.AugMix(value_range=(0, 255)),
    "RandomColorJitter": lambda: keras.layers.RandomColorJitter(value_range=(0, 255),
                                                                brightness_factor=0.2),
    "GaussianNoise": lambda: keras.layers.GaussianNoise(1.0),
    "a Sequential with RandAugment": lambda: keras.Sequential([
        keras.layers.RandomFlip(), keras.layers.RandAugment(value_range=(0, 255))]),
}


@pytest.mark.parametrize("name", [*SEEDED, *OWN_GENERATORS])
def test_which_layers_take_the_batch_seeds_is_probed_without_side_effects(name):
    from facelab.inputs import _seeded_leaves

    layer = {**SEEDED, **OWN_GENERATORS}[name]()
    before = [v.numpy() for v in layer.variables]
    leaves = _seeded_leaves(layer, (8, 8, 3))
    if name in SEEDED:
        assert leaves is not None and len(leaves) == len(getattr(layer, "layers", [layer]))
    else:
        assert leaves is None  # it draws from its own generators: the sequential map
    assert all(np.array_equal(v.numpy(), b) for v, b in zip(layer.variables, before))


def test_a_set_that_cannot_start_is_refused():
    images, labels = tiny_images(9, n=16, side=4)
    for plan, start in ((BalancePlan.of_rows(np.array([], np.int64)), {}),
                        (BalancePlan.identity(16), {"first_batch": 2}),
                        (BalancePlan.identity(16), {"first_batch": -1})):
        with pytest.raises(ValueError, match="cannot start at batch"):
            make_dataset(images, {"race": labels}, plan, 8, shuffle=True, seed=0, passes=None,
                         **start)


def test_images_stay_out_of_the_graph():
    """The images are captured by reference, not embedded as a constant in the map's graph
    (graphs stop at 2 GB; a numpy array captured by the function would be embedded)."""
    images = np.zeros((64, 32, 32, 3), np.uint8)
    dataset = make_dataset(images, {"race": np.zeros(64, np.int64)}, BalancePlan.identity(64),
                           8, shuffle=False, seed=0)
    batches = dataset._input_dataset  # prefetch(map(rows)): the map, its traced function
    graph = batches._map_func.function.graph.as_graph_def()
    constants = [node.attr["value"].tensor.ByteSize() for node in graph.node
                 if node.op == "Const"]
    assert constants and max(constants) < 4096
