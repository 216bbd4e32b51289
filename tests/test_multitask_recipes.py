"""recipes/multitask-2023: every config validates, reproduces Table 3, and matches paper.yaml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml

from facelab.data import Task
from facelab.errors import FacelabError
from facelab.recipe import load_recipe

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

FOLDER = Path(__file__).resolve().parent.parent / "recipes" / "multitask-2023"
PAPER = yaml.safe_load((FOLDER / "paper.yaml").read_text())
CONFIGS = {  # file -> (tasks, backbone, sources, paper.yaml row)
    "config-a-smile.yaml": (["smile"], "bknet", ["genki4k"], "config_a_smile"),
    "config-a-gender.yaml": (["gender"], "bknet", ["imdb_wiki"], "config_a_gender"),
    "config-a-age.yaml": (["age"], "bknet", ["imdb_wiki"], "config_a_age"),
    "config-b.yaml": (["smile", "age", "gender"], "bknet", ["genki4k", "imdb_wiki"], "config_b"),
    "config-c.yaml": (["smile", "age", "gender"], "mbknet", ["genki4k", "imdb_wiki"], "config_c"),
}
TASKS = {"smile": Task("smile", ("non-smile", "smile")),
         "gender": Task("gender", ("male", "female")),
         "age": Task("age", ("0-15", "16-25", "26-35", "36-45", "46-60", "61-100"))}


@pytest.fixture
def data_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("GENKI4K_DIR", str(tmp_path / "GENKI-4K"))
    monkeypatch.setenv("IMDB_WIKI_DIR", str(tmp_path / "imdb_crop"))
    return tmp_path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_validates_with_the_paper_settings(data_dirs, name):
    tasks, backbone, sources, _ = CONFIGS[name]
    recipe = load_recipe(FOLDER / name)
    assert recipe.tasks == tasks and recipe.backbone.name == backbone
    assert list(recipe.datasets) == sources
    assert recipe.schema.paper == "rohani2023"
    split = recipe.split.params.by_source
    if "genki4k" in sources:
        assert recipe.datasets["genki4k"].params.root == str(data_dirs / "GENKI-4K")
        assert (split["genki4k"].test, split["genki4k"].val, split["genki4k"].train) == (1000, 0, 3000)
    if "imdb_wiki" in sources:
        imdb = recipe.datasets["imdb_wiki"].params
        assert (imdb.root, imdb.subset, imdb.limit) == (str(data_dirs / "imdb_crop"), "imdb", 170000)
        assert (split["imdb_wiki"].test, split["imdb_wiki"].train) == (20000, 150000)
    detector = recipe.detector
    assert detector.name == "mtcnn"
    assert tuple(detector.params.size) == (48, 48) and detector.params.colour == "grey"
    assert [a.name for a in recipe.augment] == ["random-crop", "flip", "rotation"]
    train = recipe.schema.train
    assert train.batch_size == 128
    assert train.schedule.model_dump() == {"type": "exponential-decay", "initial_learning_rate": 0.01,
                                           "decay_steps": 2000, "decay_rate": 0.8}
    assert recipe.loss.name == "masked-multitask" and recipe.loss.params.l2 == 0.01
    assert recipe.loss.params.normalizer == "batch" and not recipe.loss.params.weights  # mu_t = 1
    for head in recipe.heads.values():
        assert head.name == "multitask" and head.params.dropout == 0.5
        assert list(head.params.units) == [256, 256] and head.params.batch_norm is False


def test_recipes_need_their_data_folders(monkeypatch):
    monkeypatch.delenv("GENKI4K_DIR", raising=False)
    monkeypatch.setenv("IMDB_WIKI_DIR", "/x")
    with pytest.raises(FacelabError, match="environment variable GENKI4K_DIR is not set"):
        load_recipe(FOLDER / "config-c.yaml")


def test_summary_gives_table3(data_dirs, cli_runner):
    """``facelab summary`` builds each model the core's way, from the recipe alone."""
    from facelab.cli import cli

    checked = []
    for name, (_, _, _, row) in CONFIGS.items():
        result = cli_runner.invoke(cli, ["summary", str(FOLDER / name), "--json"])
        assert result.exit_code == 0, result.output
        counts = json.loads(result.output.strip().splitlines()[-1])
        assert counts["input_shape"] == [48, 48, 1] and counts["non_trainable"] == 0
        if row in PAPER["parameters"]:
            assert counts["total"] == PAPER["parameters"][row]["total"], name
            checked.append(row)
        else:  # config A, age: 6 outputs instead of 2
            assert counts["total"] == 2_418_146 + 4 * 257
    assert checked == ["config_a_smile", "config_a_gender", "config_b", "config_c"]
    assert [PAPER["parameters"][r]["total"] for r in checked] == [2_418_146, 2_418_146,
                                                                    3_731_946, 3_953_130]


def test_core_compiled_model_carries_lambda_l2(data_dirs):
    from facelab.pipeline import compile_model

    recipe = load_recipe(FOLDER / "config-c.yaml")
    model = compile_model(recipe, (48, 48, 1), {t: TASKS[t] for t in recipe.tasks})
    kernels = [v for v in model.trainable_variables if v.name == "kernel"]
    assert len(kernels) == 9 + 3 * 3 and all(v.regularizer is not None for v in kernels)
    expected = 0.01 * sum(float(np.sum(np.square(v))) for v in kernels)
    assert float(keras.ops.sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert model.count_params() == 3_953_130


def test_paper_file_rows_match_the_recipes():
    assert PAPER["kind"] == "paper-results" and PAPER["paper"] == "rohani2023"
    assert PAPER["recipes"] == {row: name for name, (*_, row) in CONFIGS.items()}
    for row, tasks in PAPER["classification"].items():
        assert list(tasks) == CONFIGS[PAPER["recipes"][row]][0], row
        for task, value in tasks.items():  # Table 2's rows for the paper's configs
            label = {"config_a": "Single BKNet (Config A)", "config_b": "MTL-BKNet (Config B)",
                     "config_c": "MTL-MBKNet (Config C)"}[row[:8]]
            assert PAPER["literature_accuracy_percent"][task][label] == value
    for timing in PAPER["timing"].values():
        assert timing["execution_time_s_128_images"] * timing["fps"] == pytest.approx(128, abs=0.1)
    # the abstract's MTL gains are config C minus config A
    a = {t: v for row, tasks in PAPER["classification"].items() if row.startswith("config_a")
         for t, v in tasks.items()}
    c = PAPER["classification"]["config_c"]
    assert {t: round(c[t] - a[t], 2) for t in c} == {"smile": 1.55, "age": 3.52, "gender": 2.04}
