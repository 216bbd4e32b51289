"""The race-2025 recipes validate, say what the paper did, and paper.yaml is self-consistent."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.model_selection import train_test_split

from facelab.errors import FacelabError
from facelab.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "race-2025"
DOC = ROOT / "docs" / "reproduce-race-2025.md"
PAPER = yaml.safe_load((RECIPES / "paper.yaml").read_text())
UTKFACE_COUNTS = {"white": 10078, "black": 4526, "asian": 3434, "indian": 3975}


@pytest.fixture(autouse=True)
def utkface_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("UTKFACE_DIR", str(tmp_path / "UTKFace"))
    return tmp_path / "UTKFace"


@pytest.mark.parametrize("name", ["base", "bd", "bd-am"])
def test_recipe_is_the_papers_setup(name, utkface_dir):
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    s = recipe.schema
    assert recipe.name == f"race-2025-{name}" and s.paper == "rohani2025"
    assert recipe.datasets["default"].name == "utkface"
    assert recipe.datasets["default"].params.root == str(utkface_dir)
    assert list(recipe.datasets["default"].params.classes) == list(UTKFACE_COUNTS)
    assert recipe.detector.name == "mtcnn" and recipe.detector.params.size == (224, 224)
    assert recipe.detector.params.align
    split = recipe.split
    assert (split.name, split.params.test, split.params.val) == ("race-2025", 0.2, 0.1)
    assert recipe.stratify == "race" and recipe.tasks == ["race"]
    assert (s.train.epochs, s.train.batch_size) == (50, 32)
    assert s.train.optimizer.type == "adam"
    assert s.train.optimizer.model_extra["learning_rate"] == 1e-3
    assert recipe.loss.name == "cross-entropy"
    head = recipe.heads["race"]
    assert head.name == "classification" and head.params.dropout == 0.5
    backbone = recipe.backbone.params
    assert recipe.backbone.name == "efficientnet" and backbone.variant == "b3"
    assert backbone.weights == "imagenet" and backbone.freeze == "none"
    assert {a.name for a in recipe.augment} == {"flip", "rotation", "zoom"}
    expected = {"base": (True, "none", "none"), "bd": (False, "smote", "none"),
                "bd-am": (False, "smote", "cbam")}[name]
    assert (backbone.include_top, recipe.balancer.name, recipe.attention.name) == expected
    if name == "bd-am":
        assert recipe.attention.params.reduction == 8 and not recipe.attention.params.use_bias


def test_utkface_dir_must_be_set(monkeypatch):
    monkeypatch.delenv("UTKFACE_DIR")
    with pytest.raises(FacelabError, match="UTKFACE_DIR is not set"):
        load_recipe(RECIPES / "bd.yaml")


def documented_cpu_commands() -> list[list[str]]:
    """The ``facelab run recipes/race-2025/...`` commands of the docs' CPU section."""
    text = DOC.read_text()
    section = text.split("## On CPU", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("facelab run recipes/race-2025/"):
                commands.append(shlex.split(line))
    return commands


def test_documented_cpu_commands_validate():
    commands = documented_cpu_commands()
    assert sorted(Path(c[2]).name for c in commands) == ["base.yaml", "bd-am.yaml", "bd.yaml"]
    for command in commands:
        overrides = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
        recipe = load_recipe(ROOT / command[2], overrides)
        assert recipe.datasets["default"].name == "synthetic"
        assert recipe.detector.name == "none" and recipe.backbone.params.weights is None


def test_paper_numbers_are_self_consistent():
    for model, p in PAPER["parameters"].items():
        assert round(p["total"] * 4 / 1024 ** 2, 2) == p["ram_mb"], model  # eq. 7
    for model, t in PAPER["timing"].items():
        assert abs(1000 / t["ms_per_image"] - t["fps"]) / t["fps"] < 0.2, model
    literature = PAPER["literature_accuracy_percent"]
    for model, key in (("base", "Base model"), ("model1", "Proposed model1"),
                       ("model2", "Proposed model2")):
        report = PAPER["classification"][model]
        assert abs(literature[key] / 100 - report["accuracy"]) <= 0.005, model
        support = {c: v["support"] for c, v in report["per_class"].items()}
        recall_accuracy = sum(v["recall"] * v["support"] for v in report["per_class"].values()) \
            / sum(support.values())
        assert abs(recall_accuracy - report["accuracy"]) < 0.01, model
        for race, v in report["per_class"].items():
            f1 = 2 * v["precision"] * v["recall"] / (v["precision"] + v["recall"])
            assert abs(f1 - v["f1"]) <= 0.011, (model, race)


def test_paper_split_counts_follow_from_utkface_counts():
    """A stratified 80/20 split of UTKFace's 4-race counts gives Table 4's supports, and SMOTE on
    the 80% gives 8,062 per class (32,248): the numbers behind ``protocol: paper``."""
    labels = np.repeat(np.arange(4), list(UTKFACE_COUNTS.values()))
    assert len(labels) == PAPER["data"]["images"]
    train, test = train_test_split(labels, test_size=0.2, stratify=labels, random_state=0)
    supports = [v["support"] for v in PAPER["classification"]["base"]["per_class"].values()]
    assert np.bincount(test).tolist() == supports
    assert np.bincount(train).max() == PAPER["data"]["smote_per_class"]
    assert 4 * np.bincount(train).max() == PAPER["data"]["balanced_train_images"]
    indian_val = PAPER["data"]["validation_indian"]
    assert round(0.1 * np.bincount(train)[3]) == indian_val["unbalanced"]
    assert round(0.1 * np.bincount(train).max()) == indian_val["balanced"]
