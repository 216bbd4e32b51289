"""Recipes are data, safe to receive from someone else: YAML aliases are bounded, ``extends``
reads only recipe files and never echoes another file, ``${ENV}`` expands only in path fields,
a run name cannot escape ``output_dir``, and what can be checked is checked by ``validate``.

Every bad recipe goes through ``facelab validate``: exit 2, one line, no traceback, quickly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RECIPES
from facelab.cli import cli

SECRET = "hunter2-the-secret-line"

#: The classic "billion laughs": 9 levels of 9 aliases each, 10**9 strings once expanded.
BILLION_LAUGHS = """\
name: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

# (case, recipe text written to bad.yaml (base.yaml is the quickstart), extra CLI args,
#  expected fragments)
CASES = [
    ("alias bomb", BILLION_LAUGHS, [],
     ["bad.yaml: invalid YAML at line", "aliases expand the document to more than"]),
    ("alias bomb in a component", "extends: base.yaml\n" + BILLION_LAUGHS.replace(
        "name:", "description:").replace("i: &i", "model: {backbone: {filters: &i"
                                                  ).rstrip() + "}}\n", [],
     ["aliases expand the document to more than"]),
    ("self-referencing alias", "extends: base.yaml\nevaluate: &x {groups: [*x]}\n", [],
     ["bad.yaml: invalid YAML at line 2", "recursive alias"]),
    ("self-referencing list", "extends: base.yaml\nname: &x [*x]\n", [], ["recursive alias"]),
    ("deeply nested", "name: " + "[" * 5000 + "]" * 5000 + "\n", [],
     ["bad.yaml: invalid YAML at line 1, column 106: nested more than 100 levels deep"]),
    ("huge file", "name: x\ndescription: '" + "a" * (1 << 20) + "'\n", [],
     ["bad.yaml: larger than 1048576 bytes; not a recipe"]),
    ("extends a non-YAML file", "extends: secret.txt\nname: x\n", [],
     ["extends: 'secret.txt' is not a .yaml or .yml file; extends reads only recipe files"]),
    ("extends a YAML file that is no recipe", "extends: secret.yaml\nname: x\n", [],
     ["secret.yaml: not a facelab recipe: its top-level keys are not all recipe sections"]),
    ("extends a link to a non-YAML file", "extends: link.yaml\nname: x\n", [],
     ["is not a .yaml or .yml file"]),
    ("env var in a non-path field", "extends: base.yaml\ndescription: 'home is ${HOME}'\n", [],
     ["bad.yaml: description: environment variables expand only in path fields (got ${HOME})"]),
    ("env var in a component's non-path field",
     "extends: base.yaml\nmodel: {heads: {race: {type: classification, dropout: '${HOME}'}}}\n",
     [], ["model.heads.race.dropout: environment variables expand only in path fields"]),
    ("env var in a tracking tag", "extends: base.yaml\ntracking: {tags: {who: '${USER}'}}\n", [],
     ["tracking.tags.who: environment variables expand only in path fields (got ${USER})"]),
    ("env var in an optimizer argument",
     "extends: base.yaml\ntrain: {optimizer: {type: adam, learning_rate: '${LR}'}}\n", [],
     ["train.optimizer.learning_rate: environment variables expand only in path fields"]),
    ("env var through --set", "extends: base.yaml\n", ["--set", "tracking.run_name=${HOME}"],
     ["tracking.run_name: environment variables expand only in path fields"]),
    ("name escaping output_dir", "extends: base.yaml\nname: ../escape\n", [],
     ["bad.yaml: name: a recipe name is also a folder name: it cannot contain /, \\ or .."]),
    ("name with a separator", "extends: base.yaml\nname: a/b\n", [],
     ["name: a recipe name is also a folder name"]),
    ("name that is a parent", "extends: base.yaml\n", ["--set", "name=.."],
     ["name: a recipe name is also a folder name"]),
    ("seed below 0", "extends: base.yaml\nseed: -1\n", [],
     ["seed: input should be greater than or equal to 0"]),
    ("seed above 2**32 - 1", "extends: base.yaml\nseed: 4294967296\n", [],
     ["seed: input should be less than or equal to 4294967295"]),
    ("unknown group", "extends: base.yaml\nevaluate: {groups: [gendr]}\n", [],
     ["evaluate.groups.0: unknown column 'gendr'; did you mean 'gender'?",
      "age, age_group, gender, race, source"]),
    ("head the dataset lacks",
     "extends: base.yaml\nmodel: {heads: {smile: {type: classification}}}\n"
     "data: {split: {stratify: smile}}\n", [],
     ["model.heads.smile: unknown task 'smile'", "(tasks come from the dataset)"]),
    ("duplicate classes", "extends: base.yaml\ndata: {dataset: {classes: [white, black, white]}}\n",
     [], ["data.dataset.classes: 'white' listed more than once"]),
    ("duplicate classes of a nested schema",
     "extends: base.yaml\nmodel: {heads: {label: {type: classification}}}\n"
     "data: {dataset: {type: csv, tables: [t.csv], tasks: {label: {classes: [a, b, a]}}},"
     " split: {stratify: label}}\nevaluate: {groups: []}\n", [],
     ["data.dataset.tasks.label.classes: classes ['a'] are listed twice"]),
    ("unknown race", "extends: base.yaml\ndata: {dataset: {classes: [white, blak]}}\n", [],
     ["data.dataset.classes: unknown race 'blak'; did you mean 'black'?"]),
]


@pytest.fixture
def hostile(workdir):
    shutil.copy(RECIPES / "quickstart.yaml", workdir / "base.yaml")
    (workdir / "secret.txt").write_text(f"{SECRET}\nroot:x:0:0:root:/root:/bin/bash\n")
    (workdir / "secret.yaml").write_text(f"password: {SECRET}\n")
    (workdir / "link.yaml").symlink_to(workdir / "secret.txt")
    return workdir


@pytest.mark.parametrize("name,text,args,expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_recipe(hostile, cli_runner, monkeypatch, name, text, args, expected):
    monkeypatch.setenv("USER", "someone")
    monkeypatch.setenv("LR", "0.1")
    (hostile / "bad.yaml").write_text(text)
    started = time.perf_counter()
    result = cli_runner.invoke(cli, ["validate", "bad.yaml", *args])
    elapsed = time.perf_counter() - started
    output = result.output.strip()
    assert result.exit_code == 2, output
    assert len(output.splitlines()) == 1, output
    assert "Traceback" not in output
    assert output.startswith("error: "), output
    for fragment in expected:
        assert fragment in output, output
    assert SECRET not in output and "root:x" not in output
    assert str(Path.home()) not in output
    assert elapsed < 1.0, f"{name}: validate took {elapsed:.2f} s"


def test_alias_bomb_is_refused_fast_by_the_loader():
    from facelab.recipe import parse_yaml

    started = time.perf_counter()
    with pytest.raises(Exception, match="alias bomb"):
        parse_yaml(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5


def test_reasonable_aliases_still_work(hostile, cli_runner):
    (hostile / "ok.yaml").write_text(
        "extends: base.yaml\nname: aliases\n"
        "model: {backbone: {type: simple-cnn, filters: &f [8, 16]}}\n"
        "evaluate: {groups: &g [gender, age_group]}\n"
        "tracking: {tags: {a: &t x, b: *t}}\n")
    result = cli_runner.invoke(cli, ["show", "ok.yaml"])
    assert result.exit_code == 0, result.output
    assert "groups: [gender, age_group]" in result.output


def test_env_expands_in_path_fields_and_the_original_is_kept(hostile, cli_runner, monkeypatch):
    """Path fields expand ``${VAR}`` and ``~``; the resolved recipe holds the expanded path and
    ``source_text`` (saved as recipe.original.yaml, logged by MLflow) the file as written."""
    from facelab.recipe import load_recipe

    monkeypatch.setenv("FACELAB_TEST_DATA", str(hostile / "data"))
    text = ("extends: base.yaml\nname: env\noutput_dir: '${FACELAB_TEST_DATA}/runs'\n"
            "data: {cache_dir: ~/cache, dataset: {root: '${FACELAB_TEST_DATA}/synth'}}\n")
    (hostile / "env.yaml").write_text(text)
    recipe = load_recipe(hostile / "env.yaml")
    assert recipe.schema.output_dir == f"{hostile}/data/runs"
    assert recipe.schema.data.cache_dir == str(Path.home() / "cache")
    assert recipe.datasets["default"].params.root == f"{hostile}/data/synth"
    assert recipe.source_text == text
    assert "${FACELAB_TEST_DATA}/synth" in recipe.source_text
    # a non-path string that merely looks like a home folder is left alone
    recipe = load_recipe(hostile / "env.yaml", ["description=~/not-a-path"])
    assert recipe.schema.description == "~/not-a-path"


def test_path_fields_of_built_in_components_are_marked():
    from facelab.manager import get_registry
    from facelab.params import is_path_field

    marked = {f"{c.name}.{key}" for c in get_registry() for key, info in
              c.params.model_fields.items() if is_path_field(info)}
    assert {"utkface.root", "synthetic.root", "genki4k.root", "imdb-wiki.root", "folder.root",
            "csv.root", "efficientnet.weights"} <= marked
    from facelab.plugins.datasets.csv_table import CsvTable
    from facelab.recipe import DataSection, RecipeSchema, TrackingSection

    assert is_path_field(CsvTable.model_fields["path"])
    assert is_path_field(DataSection.model_fields["cache_dir"])
    assert is_path_field(RecipeSchema.model_fields["output_dir"])
    assert is_path_field(TrackingSection.model_fields["uri"])
    assert not is_path_field(RecipeSchema.model_fields["name"])


def test_output_folder_stays_inside_output_dir(hostile):
    """Even a recipe built without the schema's name check cannot leave ``output_dir``."""
    from facelab.recipe import load_recipe
    from facelab.run import new_output_dir

    recipe = load_recipe(hostile / "base.yaml", ["output_dir=out"])
    for name in ("../escape", "..", "...", "a/../../b", "/etc/x", ".hidden"):
        schema = recipe.schema.model_copy(update={"name": name})
        made = new_output_dir(type(recipe)(**{**recipe.__dict__, "schema": schema}))
        assert made.resolve().parent == (hostile / "out").resolve(), (name, made)
    assert sorted(p.name for p in hostile.iterdir() if p.is_dir()) == ["out"]


@pytest.mark.parametrize("name", ["alias bomb", "extends a non-YAML file"])
def test_hostile_recipes_in_a_real_process(hostile, name):
    """As a user meets them: `facelab validate` in its own process answers within seconds, with
    one line, exit 2, no traceback and nothing of another file's content."""
    text = {"alias bomb": BILLION_LAUGHS,
            "extends a non-YAML file": "extends: secret.txt\nname: x\n"}[name]
    (hostile / "hostile.yaml").write_text(text)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "facelab.cli", "validate", "hostile.yaml"],
                          cwd=hostile, capture_output=True, text=True, timeout=60, env=env)
    seconds = time.monotonic() - start
    assert done.returncode == 2, done.stdout + done.stderr
    assert seconds < 10, seconds
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr
