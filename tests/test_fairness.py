"""Fairness with uncertainty (facelab.fairness): per-group accuracy, recall and false positive
rate with bootstrap intervals, small groups flagged, intersections, and the terminal summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import RECIPES
from facelab.console import fairness_lines
from facelab.data import NO_LABEL, Task
from facelab.errors import FacelabError
from facelab.fairness import age_groups, group_columns, task_fairness
from facelab.results import TOO_SMALL, TaskFairness, fairness_from_json, fairness_to_json

RACE = Task("race", ("white", "black", "asian"))
GENDER = Task("gender", ("male", "female"))
TASKS = {"race": RACE, "gender": GENDER}


def _by_label(fairness: TaskFairness) -> dict:
    return {g.label: g for g in fairness.groups}


def test_rates_per_group_match_a_hand_count():
    # 8 rows: true race, predicted race, gender (0 male, 1 female)
    true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 0, 2, 0, 2])
    gender = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    frame = pd.DataFrame({"race": true, "gender": gender})
    f = task_fairness(frame, true, pred, RACE, TASKS, resamples=0, min_group_size=1)
    assert f.columns == ("race", "gender")
    # everyone: 5 of 8 right; white: 2 of 3 found, predicted white for 2 of the 5 non-white
    assert f.overall.accuracy.value == pytest.approx(5 / 8) and f.overall.n == 8
    assert f.overall.recall["white"].value == pytest.approx(2 / 3)
    assert f.overall.recall["white"].n == 3
    assert f.overall.fpr["white"].value == pytest.approx(2 / 5)
    assert f.overall.fpr["white"].n == 5
    assert f.overall.recall["black"].value == pytest.approx(1 / 2)
    assert f.overall.fpr["black"].value == pytest.approx(1 / 6)
    groups = _by_label(f)
    # female rows: (0->1), (1->1), (2->2), (2->0): accuracy 2/4
    female = groups["gender=female"]
    assert (female.n, female.accuracy.value) == (4, 0.5)
    assert female.recall["asian"].value == pytest.approx(1 / 2)   # asian females: 2, one found
    assert female.fpr["white"].value == pytest.approx(1 / 3)  # 3 non-white females, 1 -> white
    assert female.fpr["black"].value == pytest.approx(1 / 3)  # 3 non-black females, 1 -> black
    assert "black" in female.recall and "white" in female.recall  # each has one female
    # the task's own groups: accuracy per true race is its recall, and no FPR of itself
    assert groups["race=white"].accuracy.value == pytest.approx(2 / 3)
    assert "white" not in groups["race=white"].fpr
    # intersections: every (race, gender) cell that has rows, counts adding up
    crossed = [g for g in f.groups if g.columns == ("race", "gender")]
    assert sum(g.n for g in crossed) == 8
    assert groups["race=asian x gender=female"].accuracy.value == pytest.approx(1 / 2)
    assert f.resamples == 0 and f.overall.accuracy.low is None


def test_bootstrap_interval_matches_the_binomial_by_hand():
    """A group of 4 with 3 right: resampling its rows gives k right ~ Binomial(4, 3/4), so
    P(k <= 0) = 0.0039 and P(k <= 1) = 0.0508: the 2.5% point is k = 1 (0.25), and the 97.5%
    point is k = 4 (1.0), since P(k <= 3) = 0.6836."""
    true = np.zeros(4, dtype=np.int64)
    pred = np.array([0, 0, 0, 1])
    f = task_fairness(pd.DataFrame({"race": true}), true, pred, RACE, TASKS,
                      resamples=20_000, min_group_size=1, seed=3)
    assert f.overall.accuracy.value == 0.75
    assert (f.overall.accuracy.low, f.overall.accuracy.high) == (0.25, 1.0)


def test_bootstrap_matches_resampling_rows():
    """The multinomial draw of the confusion matrix is row resampling: same intervals (within
    Monte Carlo error) as resampling the rows by hand, for accuracy, recall and FPR."""
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.7, true, rng.integers(0, 3, 60))
    f = task_fairness(pd.DataFrame({"race": true}), true, pred, RACE, TASKS,
                      resamples=20_000, min_group_size=1, seed=1)
    rows = rng.integers(0, 60, (20_000, 60))
    t, p = true[rows], pred[rows]
    accuracy = (t == p).mean(axis=1)
    recall = ((t == 1) & (p == 1)).sum(axis=1) / (t == 1).sum(axis=1)
    fpr = ((t != 0) & (p == 0)).sum(axis=1) / (t != 0).sum(axis=1)
    for estimate, samples in ((f.overall.accuracy, accuracy), (f.overall.recall["black"], recall),
                              (f.overall.fpr["white"], fpr)):
        low, high = np.percentile(samples, [2.5, 97.5])
        assert estimate.low == pytest.approx(low, abs=0.02)
        assert estimate.high == pytest.approx(high, abs=0.02)


def _random_run(n: int, seed: int = 0, accuracy: float = 0.8):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"race": rng.integers(0, 3, n), "gender": rng.integers(0, 2, n),
                          "age": rng.integers(1, 90, n)})
    true = frame["race"].to_numpy()
    pred = np.where(rng.random(n) < accuracy, true, rng.integers(0, 3, n))
    return frame, true, pred


def test_intervals_contain_the_estimate_shrink_with_n_and_repeat_with_the_seed():
    frame, true, pred = _random_run(300)
    f = task_fairness(frame, true, pred, RACE, TASKS, resamples=500, min_group_size=1, seed=7)
    estimates = [g.accuracy for g in (f.overall, *f.groups)]
    estimates += [e for g in f.groups for e in (*g.recall.values(), *g.fpr.values())]
    for e in estimates:
        assert e.low <= e.value <= e.high, e
    again = task_fairness(frame, true, pred, RACE, TASKS, resamples=500, min_group_size=1, seed=7)
    assert again == f
    other = task_fairness(frame, true, pred, RACE, TASKS, resamples=500, min_group_size=1,
                          seed=8)
    assert other.overall.accuracy.value == f.overall.accuracy.value
    assert other != f

    def width(n):
        frame, true, pred = _random_run(n, seed=1)
        e = task_fairness(frame, true, pred, RACE, TASKS, resamples=1000, seed=2).overall.accuracy
        return e.high - e.low

    assert width(4000) < width(400) / 2.5 < width(40) / 2.5 ** 2  # ~ 1 / sqrt(n)


def test_small_groups_are_flagged_and_not_ranked():
    frame, true, pred = _random_run(400, accuracy=0.9)
    # a small group of 6 that is always wrong, and a large one that is worse than the rest
    frame["site"] = np.where(np.arange(400) < 6, "tiny", np.where(np.arange(400) < 106, "b", "a"))
    pred = pred.copy()
    pred[:6] = (true[:6] + 1) % 3
    pred[6:106] = np.where(np.arange(100) % 2 == 0, (true[6:106] + 1) % 3, true[6:106])
    f = task_fairness(frame, true, pred, RACE, TASKS, ["site"], resamples=200,
                      min_group_size=30, max_crossed=1)
    groups = _by_label(f)
    assert groups["site=tiny"].small and groups["site=tiny"].accuracy.value == 0
    assert groups["site=tiny"].accuracy.low is not None  # shown with its interval, not hidden
    assert f.worst.label == "site=b"   # the worst judged group, not the tiny one
    site_gap = next(g for g in f.gaps if g.columns == ("site",))
    assert (site_gap.worst, site_gap.best) == ({"site": "b"}, {"site": "a"})
    assert site_gap.gap.value == pytest.approx(groups["site=a"].accuracy.value
                                               - groups["site=b"].accuracy.value)
    assert site_gap.gap.low > 0   # a real gap: its interval excludes 0
    assert all(g.n >= 30 for g in f.judged) and all(g.n < 30 for g in f.small_groups)
    rows = f.rows("test")
    flags = {(r["group"], r["metric"], r["class"]): r["flag"] for r in rows}
    assert flags[("site=tiny", "accuracy", "")] == TOO_SMALL
    assert flags[("site=b", "accuracy", "")] == "worst group"
    assert {r["flag"] for r in rows if r["metric"] == "accuracy_gap"} >= {"largest gap"}
    assert set(rows[0]) == {"split", "task", "group", "metric", "class", "value", "low", "high",
                            "n", "flag", "note"}


def test_no_group_large_enough_means_no_worst_and_no_gap():
    frame, true, pred = _random_run(40)
    f = task_fairness(frame, true, pred, RACE, TASKS, resamples=100, min_group_size=1000)
    assert f.worst is None and f.largest_gap is None and not f.judged
    lines = fairness_lines("test", f)
    assert "none ranked" in lines[1]
    assert f"{len(f.groups)} groups and intersections" in lines[-1]


def test_intersections_up_to_the_recipe_limit_and_age_groups():
    frame, true, pred = _random_run(500)
    f = task_fairness(frame, true, pred, RACE, TASKS, resamples=0, max_crossed=3)
    # race (the task), gender (the other task), age (numeric years, cut into groups)
    assert f.columns == ("race", "gender", "age")
    sizes = {len(g.columns) for g in f.groups}
    assert sizes == {1, 2, 3}
    assert {g.group["age"] for g in f.groups if g.columns == ("age",)} == {
        "0-19", "20-39", "40-59", "60+"}
    assert sum(g.n for g in f.groups if g.columns == ("race", "gender", "age")) == 500
    single = task_fairness(frame, true, pred, RACE, TASKS, resamples=0, max_crossed=1)
    assert {len(g.columns) for g in single.groups} == {1}


def test_age_groups_and_default_columns():
    names = age_groups(np.array([0, 19, 20, 39.5, 40, 59, 60, 101, np.nan, -1]))
    assert list(names) == ["0-19", "0-19", "20-39", "20-39", "40-59", "40-59", "60+", "60+",
                           "", ""]
    columns = ["path", "race", "gender", "age", "age_group", "face_score"]
    assert group_columns("race", [], TASKS, columns) == ["race", "gender", "age"]
    # an age column already chosen (UTKFace's age_group): no second one
    assert group_columns("race", ["age_group"], TASKS, columns) == ["race", "age_group", "gender"]
    assert group_columns("gender", ["nope"], TASKS, columns) == ["gender", "race", "age"]


def test_unlabelled_rows_unknown_values_and_unusable_columns():
    frame, true, pred = _random_run(200)
    true = true.copy()
    true[:20] = NO_LABEL
    frame["gender"] = frame["gender"].where(np.arange(200) % 10 != 5, NO_LABEL)
    frame["score"] = np.linspace(0, 1, 200)   # continuous: cannot make groups
    f = task_fairness(frame, true, pred, RACE, TASKS, ["score"], resamples=0)
    assert f.overall.n == 180
    assert sum(g.n for g in f.groups if g.columns == ("gender",)) == 180 - 18
    assert "score" in f.left_out and "distinct values" in f.left_out["score"]
    assert "score" not in f.columns


def test_json_round_trip_and_terminal_summary():
    frame, true, pred = _random_run(300)
    f = task_fairness(frame, true, pred, RACE, TASKS, resamples=200, min_group_size=20)
    value = json.loads(json.dumps(fairness_to_json({"test": {"race": f}})))
    assert fairness_from_json(value) == {"test": {"race": f}}
    assert value["test"]["race"]["worst"]["group"] == f.worst.group
    lines = fairness_lines("test", f)
    assert lines[0].startswith("race fairness on test (95% bootstrap intervals, 200 resamples")
    worst = f.worst
    assert lines[1].startswith(f"  worst group: {worst.label}: accuracy "
                               f"{worst.accuracy.value:.3f} [{worst.accuracy.low:.3f}, "
                               f"{worst.accuracy.high:.3f}] (n={worst.n})")
    gap = f.largest_gap
    assert f"largest gap: {' x '.join(gap.columns)}: {gap.gap.value:.3f} [" in lines[2]


@pytest.mark.parametrize("override, key", [("evaluate.bootstrap=-1", "evaluate.bootstrap"),
                                           ("evaluate.min_group_size=0", "evaluate.min_group_size"),
                                           ("evaluate.intersections=5", "evaluate.intersections")])
def test_recipe_ranges_are_enforced(override, key):
    from facelab.recipe import load_recipe

    with pytest.raises(FacelabError, match=key.replace(".", r"\.")):
        load_recipe(RECIPES / "quickstart.yaml", [override])
