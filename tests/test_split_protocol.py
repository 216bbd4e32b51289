"""Split protocols on UTKFace's real four-class counts (tiny images keep this fast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facelab.data import SampleTable, Task
from facelab.manager import get_registry
from facelab.split import SplitRequest


def split_and_balance(table, images, split_type, params, tasks, stratify, balance_on, balancer,
                      seed):
    """Split as the pipeline does: the registered split component on a SplitRequest."""
    component = get_registry().get("split", split_type)
    splitter = component.factory(component.validate(params, "data.split"), None)
    return splitter.split(SplitRequest(table, images, tasks, stratify, balance_on, balancer, seed))

REAL_COUNTS = {"white": 10078, "black": 4526, "asian": 3434, "indian": 3975}
CLASSES = tuple(REAL_COUNTS)


@pytest.fixture(scope="module")
def utkface_like():
    labels = np.repeat(np.arange(4), list(REAL_COUNTS.values()))
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 40, (len(labels), 2, 2, 1)) + labels[:, None, None, None] * 50
              ).astype(np.uint8)
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(len(labels))], "source": "utkface",
                          "race": labels})
    return SampleTable(frame, {"race": Task("race", CLASSES)}), images


#: the first wave's protocol names -> the split components that replaced them
SPLIT_TYPE = {"paper": "race-2025", "sound": "stratified"}


def _split(table, images, protocol, balancer):
    component = get_registry().get("balancer", balancer)
    return split_and_balance(table, images, SPLIT_TYPE[protocol], {"test": 0.2, "val": 0.1},
                             ["race"], "race", "race",
                             component.factory(component.validate({}, "b"), None), seed=42)


def _counts(table, plan):
    return np.bincount(table.frame["race"].to_numpy()[plan.base], minlength=4).tolist()


def test_paper_protocol_reproduces_the_papers_counts(utkface_like):
    table, images = utkface_like
    splits = _split(table, images, "paper", "smote")
    assert _counts(table, splits.plans["test"]) == [2016, 905, 687, 795]  # Table 4's support
    pool = table.frame["race"].to_numpy()[splits.train_rows]
    assert np.bincount(pool).tolist() == [8062, 3621, 2747, 3180]
    balanced = np.add(_counts(table, splits.plans["train"]), _counts(table, splits.plans["val"]))
    assert balanced.tolist() == [8062] * 4  # 32,248 in all, as the paper says
    val = _counts(table, splits.plans["val"])
    assert all(abs(v - 806) <= 1 for v in val), val  # the paper's Indian: 806
    assert splits.plans["val"].synthetic.any()  # the paper validates on SMOTE samples
    assert not splits.plans["test"].synthetic.any()


def test_paper_protocol_without_balancing_gives_figure_5s_validation(utkface_like):
    table, images = utkface_like
    splits = _split(table, images, "paper", "none")
    assert _counts(table, splits.plans["val"])[3] == 318  # Fig. 5(a): Indian 318


def test_sound_protocol_keeps_synthetic_rows_out_of_validation_and_test(utkface_like):
    table, images = utkface_like
    splits = _split(table, images, "sound", "smote")
    assert _counts(table, splits.plans["test"]) == [2016, 905, 687, 795]
    assert not splits.plans["val"].synthetic.any()
    assert not splits.plans["test"].synthetic.any()
    assert splits.plans["train"].synthetic.any()
    train = _counts(table, splits.plans["train"])
    assert len(set(train)) == 1  # balanced
    rows = {name: set(plan.base.tolist()) for name, plan in splits.plans.items()}
    assert not rows["val"] & rows["test"] and not rows["train"] & rows["test"]
    assert not rows["train"] & rows["val"]


def test_counts_split_per_source():
    frame = pd.DataFrame({"path": [f"{i}" for i in range(300)],
                          "source": ["a"] * 100 + ["b"] * 200,
                          "smile": [0, 1] * 50 + [-1] * 200,
                          "gender": [-1] * 100 + [0, 1] * 100})
    table = SampleTable(frame, {"smile": Task("smile", ("no", "yes")),
                                "gender": Task("gender", ("m", "f"))})
    spec = {"test": 0.2, "val": 0, "by_source": {"a": {"test": 30, "val": 10, "train": 40}}}
    component = get_registry().get("balancer", "none")
    splits = split_and_balance(table, np.zeros((300, 1, 1, 1), np.uint8), "stratified", spec,
                               ["smile", "gender"], "smile", "smile",
                               component.factory(component.validate({}, "b"), None), seed=0)
    sources = table.frame["source"].to_numpy()
    count = {name: dict(zip(*np.unique(sources[p.base], return_counts=True)))
             for name, p in splits.plans.items()}
    assert count["test"] == {"a": 30, "b": 40}
    assert count["val"] == {"a": 10}
    assert count["train"] == {"a": 40, "b": 160}


def test_balancers_see_training_rows_without_a_copy(utkface_like):
    """SMOTE through a RowSubset plans exactly what it plans on the copied rows."""
    from facelab.data import RowSubset

    table, images = utkface_like
    rows = np.sort(np.random.default_rng(1).choice(len(images), 3000, replace=False))
    labels = table.frame["race"].to_numpy()[rows]
    component = get_registry().get("balancer", "smote")
    smote = component.factory(component.validate({}, "b"), None)
    lazy = smote.plan(RowSubset(images, rows), labels, seed=3)
    copied = smote.plan(images[rows], labels, seed=3)
    for field in ("base", "neighbour", "step"):
        assert np.array_equal(getattr(lazy, field), getattr(copied, field))
    subset = RowSubset(images, rows)
    assert subset.shape == (3000, 2, 2, 1) and np.asarray(subset).shape == (3000, 2, 2, 1)
    assert np.array_equal(subset.reshape(3000, -1)[[0, 5]], images[rows[[0, 5]]].reshape(2, -1))
