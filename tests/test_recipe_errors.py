"""Bad recipes fail with one clear line naming the file and key, exit code 2, no traceback."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from conftest import RECIPES
from facelab.cli import cli

# (name, recipe text written to bad.yaml — may extend base.yaml, the quickstart —, extra CLI
#  args, expected message fragments)
CASES = [
    ("malformed yaml", "name: x\ndata: [1, 2\n", [], ["bad.yaml: invalid YAML at line"]),
    ("empty file", "", [], ["bad.yaml: the recipe is empty"]),
    ("not a mapping", "- a\n- b\n", [], ["a recipe must be a mapping of sections, got list"]),
    ("unknown section", "extends: base.yaml\ntrian: {epochs: 2}\n", [],
     ["trian: unknown section 'trian'; did you mean 'train'"]),
    ("misspelt backbone", "extends: base.yaml\nmodel: {backbone: {type: simple-cnm}}\n", [],
     ["model.backbone.type: unknown backbone 'simple-cnm'; did you mean 'simple-cnn'?"]),
    ("unknown component key", "extends: base.yaml\nmodel: {backbone: {filtres: [8]}}\n", [],
     ["model.backbone.filtres: unknown key 'filtres'; did you mean 'filters'?"]),
    ("wrong type", "extends: base.yaml\ntrain: {epochs: ten}\n", [],
     ["train.epochs: input should be a valid integer", "'ten'"]),
    ("out of range", "extends: base.yaml\ndata: {dataset: {count: -5}}\n", [],
     ["data.dataset.count: input should be greater than or equal to 5"]),
    ("missing type", "extends: base.yaml\ndata: {augment: [{mode: vertical}]}\n", [],
     ["data.augment.0.type: missing; expected one of:", "flip"]),
    ("params for a component without any",
     "extends: base.yaml\nmodel: {attention: {reduction: 8}}\n", [],
     ["model.attention.reduction: unknown key 'reduction'; this component takes no parameters"]),
    ("component not a mapping", "extends: base.yaml\nmodel: {backbone: simple-cnn}\n", [],
     ["model.backbone: input should be a valid dictionary"]),
    ("missing section", "name: x\ndata: {dataset: {type: synthetic}, detector: {type: none}}\n"
     "train: {loss: {type: cross-entropy}}\n", [], ["model: field required"]),
    ("extends missing", "extends: nope.yaml\n", [], ["extends: 'nope.yaml' not found"]),
    ("extends cycle", "extends: bad.yaml\n", [], ["extends: cycle"]),
    ("extends not a string", "extends: [a.yaml]\n", [],
     ["extends: expected a relative path to another recipe"]),
    ("set without =", "extends: base.yaml\n", ["--set", "train.epochs"],
     ["--set train.epochs: expected KEY=VALUE"]),
    ("set bad yaml", "extends: base.yaml\n", ["--set", "train.epochs=[1,"],
     ["--set train.epochs=[1,: the value is not valid YAML"]),
    ("set unknown section", "extends: base.yaml\n", ["--set", "trian.epochs=3"],
     ["unknown section 'trian'; did you mean 'train'"]),
    ("set empty key part", "extends: base.yaml\n", ["--set", "train..epochs=3"],
     ["expected a dotted key"]),
    ("set wrong type", "extends: base.yaml\n", ["--set", "train.batch_size=big"],
     ["train.batch_size: input should be a valid integer"]),
    ("unset env var", "extends: base.yaml\ndata: {cache_dir: '${FACELAB_NO_SUCH_DIR}/x'}\n", [],
     ["data.cache_dir: environment variable FACELAB_NO_SUCH_DIR is not set"]),
    ("unknown optimizer", "extends: base.yaml\ntrain: {optimizer: {type: adamm}}\n", [],
     ["train.optimizer.type: unknown optimizer 'adamm'; did you mean 'adam'"]),
    ("unknown optimizer argument",
     "extends: base.yaml\ntrain: {optimizer: {type: adam, learning_rat: 0.1}}\n", [],
     ["train.optimizer.learning_rat: unknown optimizer argument 'learning_rat'; "
      "did you mean 'learning_rate'?"]),
    ("unknown schedule", "extends: base.yaml\ntrain: {schedule: {type: cosine-decya}}\n", [],
     ["train.schedule.type: unknown schedule 'cosine-decya'; did you mean 'cosine-decay'"]),
    ("unknown stratify task", "extends: base.yaml\ndata: {split: {stratify: rac}}\n", [],
     ["data.split.stratify: unknown task 'rac'; did you mean 'race'?"]),
    ("dataset and datasets",
     "extends: base.yaml\ndata: {datasets: {a: {type: synthetic}}}\n", [],
     ["data: expected exactly one of 'dataset'"]),
    ("augmentation key", "extends: base.yaml\ndata: {augment: [{type: flip, mod: vertical}]}\n", [],
     ["data.augment.0.mod: unknown key 'mod'; did you mean 'mode'?"]),
    ("bad literal", "extends: base.yaml\ndata: {detector: {colour: blue}}\n", [],
     ["data.detector.colour: input should be"]),
    ("first-wave split protocol", "extends: base.yaml\ndata: {split: {protocol: paper}}\n", [],
     ["data.split.protocol: replaced by data.split.type", "race-2025, stratified"]),
    ("misspelt split", "extends: base.yaml\ndata: {split: {type: race-2052}}\n", [],
     ["data.split.type: unknown split 'race-2052'; did you mean 'race-2025'?"]),
    ("unknown source in by_source",
     "extends: base.yaml\ndata: {split: {by_source: {genki: {test: 10}}}}\n", [],
     ["data.split.by_source.genki: unknown source 'genki'"]),
    ("unknown head", "extends: base.yaml\nmodel: {heads: {race: {type: clasification}}}\n", [],
     ["model.heads.race.type: unknown head 'clasification'; did you mean 'classification'?"]),
]


@pytest.mark.parametrize("name,text,args,expected", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_recipe(workdir, cli_runner, name, text, args, expected, command):
    shutil.copy(RECIPES / "quickstart.yaml", workdir / "base.yaml")
    (workdir / "bad.yaml").write_text(textwrap.dedent(text))
    result = cli_runner.invoke(cli, [command, "bad.yaml", *args])
    assert result.exit_code == 2, result.output
    output = result.output.strip()
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    assert output.startswith("error: "), output
    for fragment in expected:
        assert fragment in output, output
    if not name.startswith("set"):
        assert "bad.yaml" in output, output
    assert not (workdir / "mlflow.db").exists(), "a run was created for an invalid recipe"


def test_missing_recipe_file(workdir, cli_runner):
    result = cli_runner.invoke(cli, ["validate", "nope.yaml"])
    assert result.exit_code == 2
    assert "error: nope.yaml: recipe file not found" in result.output


def test_debug_shows_traceback(workdir, cli_runner):
    (workdir / "bad.yaml").write_text("- a\n")
    result = cli_runner.invoke(cli, ["--debug", "validate", "bad.yaml"])
    assert result.exit_code != 0
    assert result.exception is not None and "must be a mapping" in str(result.exception)


def test_overrides_and_env(workdir, cli_runner, monkeypatch):
    shutil.copy(RECIPES / "quickstart.yaml", workdir / "base.yaml")
    monkeypatch.setenv("FACELAB_TEST_CACHE", str(workdir / "c"))
    (workdir / "child.yaml").write_text(
        "extends: base.yaml\nname: child\ndata: {cache_dir: '${FACELAB_TEST_CACHE}'}\n"
        "model: {backbone: {filters: [4]}}\n")
    result = cli_runner.invoke(cli, ["show", "child.yaml", "--set", "train.epochs=3",
                                     "--set", "data.augment.0.mode=vertical",
                                     "--set", "model.attention={type: none}"])
    assert result.exit_code == 0, result.output
    import yaml

    shown = yaml.safe_load(result.output)
    assert shown["name"] == "child"
    assert shown["train"]["epochs"] == 3
    assert shown["data"]["cache_dir"] == str(workdir / "c")
    assert shown["data"]["augment"][0] == {"type": "flip", "mode": "vertical"}
    # deep merge kept the parent's other backbone params, filled defaults
    assert shown["model"]["backbone"] == {"type": "simple-cnn", "filters": [4], "kernel_size": 3,
                                          "batch_norm": True, "bn_momentum": 0.9}
    assert shown["data"]["dataset"]["count"] == 1500


def test_changing_a_component_type_replaces_its_params(workdir):
    from facelab.recipe import deep_merge

    base = {"model": {"backbone": {"type": "a", "width": 3}, "heads": {"x": {"type": "h"}}}}
    merged = deep_merge(base, {"model": {"backbone": {"type": "b", "depth": 2}}})
    assert merged["model"]["backbone"] == {"type": "b", "depth": 2}
    assert merged["model"]["heads"] == {"x": {"type": "h"}}
