"""SMOTE and random over/under-sampling plans equal imblearn's output for the same random_state."""

from __future__ import annotations

import numpy as np
import pytest
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler

from facelab.context import BuildContext
from facelab.errors import FacelabError
from facelab.manager import get_registry


def balancer(name: str, **params):
    component = get_registry().get("balancer", name)
    return component.factory(component.validate(params, "data.balancer"), BuildContext("/tmp"))


def imblearn_rows(plan, features: np.ndarray) -> np.ndarray:
    """The plan's rows computed with imblearn's arithmetic: X[base] + step * (X[nn] - X[base])."""
    flat = features.reshape(len(features), -1)
    dtype = flat.dtype if flat.dtype in (np.float32, np.float64) else np.float32
    flat = flat.astype(dtype)
    base, neighbour = flat[plan.base], flat[plan.neighbour]
    return (base + plan.step[:, None] * (neighbour - base)).astype(dtype)


def data(seed: int, n: int = 180, dtype=np.float32, levels: int = 4):
    """Images (n, 4, 4, 3) with few grey levels, so exact distance ties are common."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, levels, (n, 4, 4, 3)).astype(dtype)
    y = rng.choice(4, n, p=[0.5, 0.2, 0.2, 0.1])
    for label in (1, 3):  # exact duplicates in the smallest class and another
        dup = np.flatnonzero(y == label)[:3]
        x[dup] = x[dup[0]]
    return x, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("strategy", ["auto", "all", "minority", "not minority"])
@pytest.mark.parametrize("k", [1, 5])
def test_smote_equals_imblearn(dtype, strategy, k):
    for seed in range(3):
        x, y = data(seed, dtype=dtype)
        expected_x, expected_y = SMOTE(k_neighbors=k, sampling_strategy=strategy,
                                       random_state=seed).fit_resample(x.reshape(len(x), -1), y)
        plan = balancer("smote", k_neighbors=k, sampling_strategy=strategy).plan(x, y, seed)
        assert np.array_equal(y[plan.base], expected_y)
        assert np.array_equal(imblearn_rows(plan, x), expected_x)  # bit for bit, same order
        assert np.array_equal(plan.base[: len(x)], np.arange(len(x)))  # originals first
        # the core's batch synthesis yields float32: bit for bit on float32 input, and within
        # float32 rounding of imblearn's float64 output on float64 input
        synthesised = plan.materialize(x).reshape(len(plan), -1)
        if dtype == np.float32:
            assert np.array_equal(synthesised, expected_x)
        else:
            np.testing.assert_allclose(synthesised, expected_x, rtol=1e-6, atol=1e-5)


def test_smote_on_uint8_equals_imblearn_on_float32():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (150, 6, 6, 3), dtype=np.uint8)
    y = rng.choice(3, 150, p=[0.6, 0.3, 0.1])
    plan = balancer("smote").plan(x, y, 42)
    expected_x, expected_y = SMOTE(random_state=42).fit_resample(
        x.reshape(150, -1).astype(np.float32), y)
    assert np.array_equal(imblearn_rows(plan, x), expected_x)
    assert np.array_equal(y[plan.base], expected_y)
    counts = np.bincount(y[plan.base])
    assert (counts == counts.max()).all()
    synthetic = plan.synthetic
    assert synthetic.sum() == len(plan) - 150 and not synthetic[:150].any()
    assert (0 <= plan.step).all() and (plan.step < 1).all()


def test_smote_needs_more_samples_than_neighbours():
    x = np.zeros((20, 2), np.float32) + np.arange(20)[:, None]
    y = np.array([0] * 16 + [1] * 4)
    with pytest.raises(FacelabError, match=r"data\.balancer\.k_neighbors: label 1 has 4 training "
                                           r"samples, but SMOTE needs more than k_neighbors \(5\)"):
        balancer("smote").plan(x, y, 0)
    assert len(balancer("smote", k_neighbors=3).plan(x, y, 0)) == 32


def test_one_class_is_a_user_error():
    with pytest.raises(FacelabError, match=r"data\.balancer.*more than 1 class"):
        balancer("smote").plan(np.zeros((10, 3)), np.zeros(10, int), 0)
    with pytest.raises(FacelabError, match="more than 1 class"):
        balancer("random-oversample").plan(np.zeros((10, 3)), np.zeros(10, int), 0)


def test_bad_strategy_is_rejected_at_validation():
    with pytest.raises(FacelabError, match=r"data\.balancer\.sampling_strategy"):
        balancer("smote", sampling_strategy="majority")
    with pytest.raises(FacelabError, match=r"data\.balancer\.k_neighbours: unknown key"):
        balancer("smote", k_neighbours=3)


@pytest.mark.parametrize("strategy", ["auto", "minority", "not minority", "all"])
def test_random_oversample_equals_imblearn(strategy):
    x, y = data(3, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    for seed in (0, 1, 42):
        sampler = RandomOverSampler(sampling_strategy=strategy, random_state=seed)
        expected_x, expected_y = sampler.fit_resample(flat, y)
        plan = balancer("random-oversample", sampling_strategy=strategy).plan(x, y, seed)
        assert np.array_equal(plan.base, sampler.sample_indices_)
        assert np.array_equal(plan.materialize(x).reshape(len(plan), -1), expected_x)
        assert np.array_equal(y[plan.base], expected_y)
        assert not plan.synthetic.any()


@pytest.mark.parametrize("strategy", ["auto", "majority", "not minority", "all"])
@pytest.mark.parametrize("replacement", [False, True])
def test_random_undersample_equals_imblearn(strategy, replacement):
    x, y = data(4, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    for seed in (0, 5):
        sampler = RandomUnderSampler(sampling_strategy=strategy, replacement=replacement,
                                     random_state=seed)
        expected_x, expected_y = sampler.fit_resample(flat, y)
        plan = balancer("random-undersample", sampling_strategy=strategy,
                        replacement=replacement).plan(x, y, seed)
        assert np.array_equal(plan.materialize(x).reshape(len(plan), -1), expected_x)
        assert np.array_equal(y[plan.base], expected_y)
    counts = np.bincount(y[plan.base])
    assert len(plan) < len(y) and counts.min() == np.bincount(y).min()
