"""A new ``type`` replaces the component, wherever it comes from (``extends``, ``--set``, a
sweep's grid): the old component's parameters are dropped, those given with the new type kept."""

from __future__ import annotations

import pytest

from conftest import RECIPES
from facelab.errors import FacelabError
from facelab.manager import get_registry
from facelab.recipe import apply_override, load_recipe

RACE = RECIPES / "race-2025"
MULTITASK = RECIPES / "multitask-2023"


@pytest.fixture(autouse=True)
def data_folders(tmp_path, monkeypatch):
    """The paper recipes name their data by environment variable; any folder validates."""
    for name in ("UTKFACE_DIR", "GENKI4K_DIR", "IMDB_WIKI_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))


def defaults(kind: str, name: str) -> dict:
    """A component's default parameters, from its schema."""
    return get_registry().get(kind, name).params().model_dump()


def params(spec) -> dict:
    return spec.params.model_dump()


@pytest.mark.parametrize("recipe,override,where,name", [
    (RACE / "bd-am.yaml", "model.attention.type=none", "attention", "none"),
    (RACE / "bd-am.yaml", "model.attention.type=se", "attention", "se"),
    (RACE / "base.yaml", "model.attention.type=cbam", "attention", "cbam"),
    (RACE / "base.yaml", "data.detector.type=none", "detector", "none"),
    (RACE / "bd-am.yaml", "data.detector.type=none", "detector", "none"),
    (RACE / "bd.yaml", "data.balancer.type=none", "balancer", "none"),
    (RACE / "bd-am.yaml", "data.balancer.type=random-undersample", "balancer",
     "random-undersample"),
    (MULTITASK / "config-c.yaml", "data.detector.type=none", "detector", "none"),
    (MULTITASK / "config-c.yaml", "model.backbone.type=simple-cnn", "backbone", "simple-cnn"),
])
def test_dotted_type_switch_on_the_paper_recipes(recipe, override, where, name):
    """``model.attention.type=none`` on bd-am.yaml used to fail with
    ``model.attention.reduction: unknown key``: CBAM's parameters stayed behind."""
    resolved = load_recipe(recipe, [override])
    spec = getattr(resolved, where)
    assert spec.name == name
    assert params(spec) == defaults(spec.component.kind, name)


def test_shared_parameter_names_get_the_new_types_defaults():
    """cbam and se both have ``reduction`` and ``use_bias``, with different defaults; mtcnn and
    none both have ``size``. A type switch must not carry the old values over."""
    cbam, se = defaults("attention", "cbam"), defaults("attention", "se")
    assert {"reduction", "use_bias"} <= set(cbam) & set(se)
    assert (cbam["reduction"], cbam["use_bias"]) != (se["reduction"], se["use_bias"])

    parent = load_recipe(RACE / "bd-am.yaml")
    assert parent.attention.name == "cbam" and parent.attention.params.reduction == 8
    switched = load_recipe(RACE / "bd-am.yaml", ["model.attention.type=se"])
    assert switched.attention.params.reduction == se["reduction"]
    assert switched.attention.params.use_bias == se["use_bias"]

    assert tuple(parent.detector.params.size) == (224, 224)
    plain = load_recipe(RACE / "bd-am.yaml", ["data.detector.type=none"])
    assert tuple(plain.detector.params.size) == tuple(defaults("detector", "none")["size"])


@pytest.mark.parametrize("overrides", [
    ["model.attention.type=se", "model.attention.reduction=4"],
    ["model.attention.reduction=4", "model.attention.type=se"],
    ["model.attention={type: se, reduction: 4}"],
    ["model.attention.reduction=4", "model.attention={type: se}"],
    ["model.attention.type=none", "model.attention.reduction=4", "model.attention.type=se"],
], ids=["type-then-param", "param-then-type", "mapping", "param-then-mapping", "type-twice"])
def test_parameters_given_with_the_new_type_are_kept_in_any_order(overrides):
    recipe = load_recipe(RACE / "bd-am.yaml", overrides)
    assert recipe.attention.name == "se"
    assert recipe.attention.params.reduction == 4
    assert recipe.attention.params.use_bias == defaults("attention", "se")["use_bias"]


def test_a_mapping_with_another_type_replaces_an_earlier_one():
    recipe = load_recipe(RACE / "bd.yaml", ["data.balancer={type: smote, k_neighbors: 3}",
                                            "data.balancer={type: random-oversample}"])
    assert recipe.balancer.name == "random-oversample"
    assert params(recipe.balancer) == defaults("balancer", "random-oversample")


def test_the_same_type_keeps_the_recipes_parameters():
    recipe = load_recipe(RACE / "bd-am.yaml", ["model.attention.type=cbam",
                                               "model.attention.kernel_size=3"])
    assert params(recipe.attention) == {"reduction": 8, "kernel_size": 3, "use_bias": False}


def test_an_extends_child_switching_type_drops_the_parents_parameters(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {RACE / 'bd-am.yaml'}\nname: child\n"
                     "model:\n  attention: {type: se}\n"
                     "data:\n  detector: {type: none, colour: grey}\n")
    recipe = load_recipe(child)
    assert recipe.attention.name == "se"
    assert params(recipe.attention) == defaults("attention", "se")
    assert params(recipe.detector) == {**defaults("detector", "none"), "colour": "grey"}
    # ... and --set switches back, with parameters from the command line
    back = load_recipe(child, ["model.attention.kernel_size=3", "model.attention.type=cbam"])
    assert params(back.attention) == {**defaults("attention", "cbam"), "kernel_size": 3}


def test_list_index_overrides():
    base = load_recipe(RACE / "base.yaml")
    assert [a.name for a in base.augment] == ["flip", "rotation", "zoom"]
    recipe = load_recipe(RACE / "base.yaml", ["data.augment.1.factor=0.2",
                                              "data.augment.0.mode=vertical"])
    assert [a.name for a in recipe.augment] == ["flip", "rotation", "zoom"]
    assert recipe.augment[1].params.factor == 0.2
    assert recipe.augment[0].params.mode == "vertical"
    assert recipe.augment[2].params == base.augment[2].params
    # a type switch inside a list item drops the old item's parameters too
    zoomed = load_recipe(RACE / "base.yaml", ["data.augment.1.type=zoom"])
    assert zoomed.augment[1].name == "zoom"
    assert zoomed.augment[1].params.factor == defaults("augmentation", "zoom")["factor"] != 0.05
    # a list given on the command line can be indexed by a later override
    given = load_recipe(RACE / "base.yaml", ["data.augment=[{type: flip}, {type: zoom}]",
                                             "data.augment.1.factor=0.3"])
    assert [(a.name, a.params.model_dump()) for a in given.augment] == [
        ("flip", defaults("augmentation", "flip")), ("zoom", {"factor": 0.3})]


@pytest.mark.parametrize("overrides,message", [
    (["data.augment.5.factor=1"],
     "--set data.augment.5.factor=1: data.augment.5: expected a list index below 3"),
    (["data.augment.x=1"], "--set data.augment.x=1: data.augment.x: expected a list index below 3"),
    (["train.epochs.x=1"], "--set train.epochs.x=1: train.epochs is 50, not a mapping"),
    (["train.epochs.x.y=1"], "--set train.epochs.x.y=1: train.epochs is 50, not a mapping"),
    (["train.epochs=3", "train.epochs.x=1"],
     "--set train.epochs.x=1: train.epochs is 3, not a mapping"),
    (["data.augment=[1]", "data.augment.0.x=2"],
     "--set data.augment.0.x=2: data.augment.0 is 1, not a mapping"),
])
def test_override_path_errors(overrides, message):
    with pytest.raises(FacelabError) as error:
        load_recipe(RACE / "base.yaml", overrides)
    assert str(error.value) == message


def test_later_overrides_win():
    recipe = load_recipe(RECIPES / "quickstart.yaml",
                         ["train.epochs=3", "train.epochs=4", "tracking.tags.a=x",
                          "tracking.tags={b: y}", "model.backbone.filters=[8]",
                          "model.backbone={filters: [4, 8]}"])
    assert recipe.schema.train.epochs == 4
    assert recipe.schema.tracking.tags == {"a": "x", "b": "y"}
    assert recipe.backbone.params.filters == [4, 8]


def test_apply_override_still_works_in_place():
    raw = {"model": {"attention": {"type": "cbam", "reduction": 8}},
           "data": {"augment": [{"type": "flip", "mode": "horizontal"}]}}
    apply_override(raw, "model.attention.type=se")
    apply_override(raw, "data.augment.0.mode=vertical")
    assert raw == {"model": {"attention": {"type": "se"}},
                   "data": {"augment": [{"type": "flip", "mode": "vertical"}]}}
