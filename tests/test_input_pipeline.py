"""The tf.data input pipeline (``facelab.inputs.make_dataset``): SMOTE rows synthesised in TF ops
equal imblearn's bit for bit; identity plans give the uint8 rows as float32 in each epoch's
order; orders depend on the seed and epoch only, so a resumed pipeline continues the
uninterrupted one; cardinality is known; augmentation runs only when given."""

from __future__ import annotations

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
    dataset = make_dataset(images, {"race": labels}, plan, 16, shuffle=shuffle, seed=5)
    order = epoch_order(len(plan), 5, 0) if shuffle else np.arange(len(plan))
    for _ in range(2 if shuffle else 1):
        x, y = epoch_of(dataset)
        assert x.dtype == np.float32 and x.shape == (len(plan), *images.shape[1:])
        assert np.array_equal(x.reshape(len(plan), -1), expected_x[order])  # not allclose
        assert np.array_equal(y["race"], expected_y[order])
        order = epoch_order(len(plan), 5, 1)


def test_identity_plans_give_the_rows_as_float32_in_the_epochs_order():
    images, labels = tiny_images(4, n=50)
    gender = labels[::-1].copy()
    dataset = make_dataset(host_tensor(images), {"race": labels, "gender": gender},
                           BalancePlan.identity(50), 8, shuffle=True, seed=9)
    for epoch in range(2):
        order = epoch_order(50, 9, epoch)
        x, y = epoch_of(dataset)
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

    def epochs(seed: int, first_epoch: int, count: int) -> list[np.ndarray]:
        dataset = make_dataset(images, {"race": labels}, plan, 32, shuffle=True, seed=seed,
                               first_epoch=first_epoch)
        return [epoch_of(dataset)[0] for _ in range(count)]

    uninterrupted = epochs(7, 0, 4)
    assert all(np.array_equal(a, b) for a, b in zip(epochs(7, 0, 4), uninterrupted))
    assert not np.array_equal(uninterrupted[0], uninterrupted[1])  # each epoch reshuffles
    assert not np.array_equal(epochs(8, 0, 1)[0], uninterrupted[0])
    resumed = epochs(7, 2, 2)  # resumed after two epochs
    assert all(np.array_equal(a, b) for a, b in zip(resumed, uninterrupted[2:]))


@pytest.mark.parametrize("shuffle", [False, True])
def test_cardinality_is_known(shuffle):
    images, labels = tiny_images(6, n=45)
    dataset = make_dataset(images, {"race": labels}, BalancePlan.identity(45), 16,
                           shuffle=shuffle, seed=0, augment=[keras.layers.RandomFlip(seed=1)])
    assert dataset.cardinality().numpy() == 3
    assert [len(x) for x, _ in dataset] == [16, 16, 13]


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
