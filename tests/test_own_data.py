"""Datasets for a user's own data: ``folder`` (root/<class>/<image>) and ``csv`` (a table of
paths and labels), FairFace read as released, and predefined splits honoured by ``stratified``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import RECIPES
from fixtures_own_data import image_bytes, write, write_fairface, write_photos
from facelab.cli import cli
from facelab.context import BuildContext, QuietProgress
from facelab.data import NO_LABEL, SPLIT_COLUMN, SampleTable, Task
from facelab.errors import FacelabError
from facelab.manager import get_registry
from facelab.plugins.datasets import csv_table, folder
from facelab.split import SplitRequest

FAIRFACE = RECIPES / "fairface"
#: Recipe overrides that make a run tiny: 24x24 crops, a 4-filter CNN, one epoch, no tracking.
TINY = ["data.detector={type: none, size: [24, 24]}", "model.backbone={type: simple-cnn, "
        "filters: [4]}", "train.epochs=1", "train.batch_size=8", "evaluate.batch_size=8",
        "evaluate.timing_batches=1", "evaluate.figures=false", "tracking.enabled=false"]


def ctx(tmp_path: Path) -> BuildContext:
    return BuildContext(cache_dir=tmp_path / "cache", seed=0)


def load(kind: str, params: dict, tmp_path: Path) -> SampleTable:
    component = get_registry().get("dataset", kind)
    return component.factory(component.validate(params, "data.dataset"), ctx(tmp_path))


def names(table: SampleTable, task: str) -> dict[str, str]:
    """file name -> class name of every row."""
    classes = table.tasks[task].classes
    return {Path(p).name: classes[label]
            for p, label in zip(table.frame["path"], table.frame[task])}


# --------------------------------------------------------------------------------------------
# folder
# --------------------------------------------------------------------------------------------

@pytest.fixture
def photos(tmp_path) -> Path:
    return write_photos(tmp_path / "photos")


def test_folder_rows_classes_and_skip_counts(photos, tmp_path):
    table = load("folder", {"root": str(photos)}, tmp_path)
    assert table.tasks == {"label": Task("label", ("cats", "dogs"))}
    assert names(table, "label") == {"a.jpg": "cats", "b.JPG": "cats", "c.jpeg": "cats",
                                     "d.png": "dogs", "e.BMP": "dogs", "f.webp": "dogs"}
    assert dict(table.skipped) == {folder.UNREADABLE: 1, folder.NOT_IMAGE: 1, folder.OUTSIDE: 1,
                                   folder.NESTED: 2}
    assert set(table.frame["source"]) == {"folder"} and SPLIT_COLUMN not in table.frame


def test_folder_recursive_reads_nested_folders(photos, tmp_path):
    table = load("folder", {"root": str(photos), "recursive": True, "task": "pet"}, tmp_path)
    assert list(table.tasks) == ["pet"]
    assert table.class_counts("pet") == {"cats": 3, "dogs": 5}
    assert {"g.jpg", "h.PNG"} <= set(names(table, "pet"))
    assert dict(table.skipped) == {folder.UNREADABLE: 1, folder.NOT_IMAGE: 1, folder.OUTSIDE: 1}


def test_folder_classes_choose_and_order(photos, tmp_path):
    write(photos / "birds" / "z.jpg", image_bytes(12))
    table = load("folder", {"root": str(photos), "classes": ["dogs", "cats"]}, tmp_path)
    assert table.class_counts("label") == {"dogs": 3, "cats": 3}
    labels = dict(zip(table.frame["path"].map(lambda p: Path(p).name), table.frame["label"]))
    assert (labels["a.jpg"], labels["d.png"]) == (1, 0)
    assert table.skipped["folder birds not in classes"] == 1
    # every sub-folder by default: three classes, sorted
    assert load("folder", {"root": str(photos)}, tmp_path).tasks["label"].classes == \
        ("birds", "cats", "dogs")


def test_folder_tasks_are_known_without_images(photos, tmp_path):
    component = get_registry().get("dataset", "folder")
    given = component.validate({"root": str(tmp_path / "nowhere"), "classes": ["no", "yes"]}, "d")
    assert component.tasks(given) == {"label": Task("label", ("no", "yes"))}
    listed = component.validate({"root": str(photos), "task": "pet"}, "d")
    assert component.tasks(listed) == {"pet": Task("pet", ("cats", "dogs"))}


def test_folder_parameter_errors():
    component = get_registry().get("dataset", "folder")
    with pytest.raises(FacelabError, match=r"^data.dataset.classes: list should have at least 2"):
        component.validate({"root": "x", "classes": ["cats"]}, "data.dataset")
    with pytest.raises(FacelabError, match=r"^data.dataset.task: 'split' is a column of every"):
        component.validate({"root": "x", "task": "split"}, "data.dataset")
    with pytest.raises(FacelabError, match=r"^data.dataset.recursve: unknown key 'recursve'; "
                                           r"did you mean 'recursive'"):
        component.validate({"root": "x", "recursve": True}, "data.dataset")


def own_recipe(tmp_path: Path, dataset: str, heads: str = "label") -> Path:
    return write(tmp_path / "own.yaml", f"""
name: own
data:
  dataset: {dataset}
  detector: {{type: none, size: [24, 24]}}
  split: {{test: 0.2, val: 0.1}}
  cache_dir: {tmp_path / 'cache'}
model:
  backbone: {{type: simple-cnn, filters: [4]}}
  heads: {{{heads}: {{type: classification}}}}
train: {{epochs: 1, batch_size: 8, loss: {{type: cross-entropy}}}}
evaluate: {{batch_size: 8, timing_batches: 1, figures: false}}
tracking: {{enabled: false}}
""")


@pytest.mark.parametrize("layout, expected", [
    ("missing", r"^error: data\.dataset\.root: folder \S+/photos does not exist; expected one "
                r"sub-folder of images per class \(root/<class>/<image>\)$"),
    ("one class", r"^error: data\.dataset\.root: found 1 class folder \(cats\) in \S+; expected at "
                  r"least two sub-folders, one per class"),
    ("empty class", r"^error: data\.dataset\.root: class folder \S+/dogs has no readable image "
                    r"\(skipped: \{'not an image file .*': 1\}\); every class needs images$"),
    ("unknown class", r"^error: data\.dataset\.classes: unknown class folder 'dgos'; did you mean "
                      r"'dogs'\? \(known: cats, dogs\) in \S+$"),
])
def test_folder_errors_are_one_line_exit_2(layout, expected, tmp_path, cli_runner):
    root = tmp_path / "photos"
    if layout != "missing":
        write(root / "cats" / "a.jpg", image_bytes(1))
    if layout in ("empty class", "unknown class"):
        write(root / "dogs" / "readme.txt", "no images here")
    if layout == "unknown class":
        write(root / "dogs" / "b.jpg", image_bytes(2))
    classes = ", classes: [cats, dgos]" if layout == "unknown class" else ""
    result = cli_runner.invoke(cli, ["data", str(own_recipe(tmp_path, f"{{type: folder, root: "
                                                            f"{root}{classes}}}"))])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert re.match(expected, lines[0]), lines[0]


# --------------------------------------------------------------------------------------------
# csv
# --------------------------------------------------------------------------------------------

def test_csv_labels_maps_edges_and_skips(tmp_path):
    """Class names, a many-to-one map, null (no label), edges, drop and no-label, empty cells,
    missing and unreadable images, an empty path, a split column."""
    images = tmp_path / "images"
    for i in range(7):
        write(images / f"{i}.jpg", image_bytes(i))
    whole = image_bytes(9)
    write(images / "cut.jpg", whole[:100])
    write(tmp_path / "labels.csv", "\n".join([
        "image,species,age,mood,part,note",
        "0.jpg,cat,3,happy,train,a",
        "1.jpg,kitten,12,,training,b",      # kitten -> cat; empty mood: no label for mood only
        "2.jpg,dog,40,sad,TEST,c",
        "3.jpg,wolf,7,happy,,d",            # wolf -> null: no species label
        "4.jpg,dog,,grumpy,val,e",          # empty age; grumpy: no-label
        "5.jpg,fish,5,sad,test,f",          # fish: dropped (counted)
        "6.jpg,dog,200,sad,,g",             # 200: outside the edges -> no-label
        "missing.jpg,cat,1,sad,,h",
        "cut.jpg,cat,1,sad,,i",
        ",cat,1,sad,,j",
    ]) + "\n")
    params = {
        "tables": [str(tmp_path / "labels.csv")], "root": str(images), "path_column": "image",
        "split_column": "part",
        "tasks": {
            "species": {"classes": ["cat", "dog"], "map": {"kitten": "cat", "wolf": None},
                        "unmapped": "drop"},
            "age_group": {"column": "age", "classes": ["child", "adult"], "edges": [0, 18, 120],
                          "unmapped": "no-label"},
            "mood": {"classes": ["happy", "sad"], "unmapped": "no-label"},
        },
    }
    table = load("csv", params, tmp_path)
    frame = table.frame.set_index(table.frame["path"].map(lambda p: Path(p).name))
    assert list(frame.index) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg", "4.jpg", "6.jpg"]
    assert frame["species"].tolist() == [0, 0, 1, NO_LABEL, 1, 1]
    assert frame["age_group"].tolist() == [0, 0, 1, 0, NO_LABEL, NO_LABEL]
    assert frame["mood"].tolist() == [0, NO_LABEL, 1, 0, NO_LABEL, 1]
    assert frame[SPLIT_COLUMN].tolist() == ["train", "train", "test", "", "val", ""]
    assert frame["note"].tolist() == ["a", "b", "c", "d", "e", "g"]  # other columns kept
    assert frame["age"].tolist() == ["3", "12", "40", "7", "", "200"]
    assert dict(table.skipped) == {"species: value 'fish' not in classes": 1,
                                   csv_table.MISSING: 1, csv_table.UNREADABLE: 1,
                                   csv_table.NO_PATH: 1}
    assert list(table.tasks) == ["species", "age_group", "mood"]


def test_csv_errors(tmp_path):
    write(tmp_path / "i.jpg", image_bytes())
    write(tmp_path / "t.csv", "path,race,part\ni.jpg,Whte,holdout\n")
    base = {"tables": [str(tmp_path / "t.csv")], "tasks": {"race": {"classes": ["White", "Black"]}}}
    cases = [
        ({"tables": [str(tmp_path / "nope.csv")]},
         r"^tables\.0\.path: \S+nope\.csv does not exist"),
        ({"root": str(tmp_path / "nope")}, r"^root: folder \S+nope does not exist"),
        ({"path_column": "paht"}, r"^path_column: \S+t\.csv: unknown column 'paht'; did you mean "
                                  r"'path' or 'part'\?"),
        ({}, r"^tasks\.race: \S+t\.csv: 1 row of column 'race': unknown value 'Whte'; did you "
             r"mean 'White'\? .*; map it, or set tasks\.race\.unmapped: drop or no-label$"),
        ({"tasks": {"race": {"classes": ["White", "Black"], "unmapped": "no-label"}},
          "split_column": "part"},
         r"^split_column: \S+t\.csv: value 'holdout' of column 'part' is not a split"),
    ]
    for change, message in cases:
        with pytest.raises(FacelabError, match=message):
            load("csv", {**base, **change}, tmp_path)
    component = get_registry().get("dataset", "csv")
    bad = [({"tasks": {"race": {"classes": ["a", "b"], "map": {"x": "c"}}}},
            r"^d\.tasks\.race: map: 'x' -> unknown class 'c'"),
           ({"tasks": {"age": {"classes": ["a", "b"], "edges": [0, 10]}}},
            r"^d\.tasks\.age\.edges: list should have at least 3 items"),
           ({"tasks": {"age": {"classes": ["a", "b"], "edges": [0, 10, 5]}}},
            r"^d\.tasks\.age: edges must increase"),
           ({"tasks": {"source": {"classes": ["a", "b"]}}}, r"^d\.tasks: task name 'source'"),
           ({"tasks": {"race": {"classes": ["a", "b"], "colum": "x"}}},
            r"^d\.tasks\.race\.colum: unknown key 'colum'; did you mean 'column'"),
           ({"tables": ["a.csv", {"path": "b.csv", "spilt": "test"}]},
            r"^d\.tables\.1\.spilt: unknown key 'spilt'; did you mean 'split'"),
           ({"tables": [{"path": "b.csv", "split": "testing"}]},
            r"^d\.tables\.0\.split: input should be 'train', 'val' or 'test'"),
           ({"tables": []}, r"^d\.tables: list should have at least 1 item")]
    assert component.validate({**base, "tables": "one.csv"}, "d").tables[0].path == "one.csv"
    for change, message in bad:
        with pytest.raises(FacelabError, match=message):
            component.validate({**base, **change}, "d")


# --------------------------------------------------------------------------------------------
# FairFace, as released
# --------------------------------------------------------------------------------------------

@pytest.fixture
def fairface(tmp_path, monkeypatch) -> Path:
    """3 train and 1 val rows per race, plus in train: a missing image (Black), the race value
    Martian, an empty age (White)."""
    root = write_fairface(tmp_path / "fairface")
    monkeypatch.setenv("FAIRFACE_DIR", str(root))
    return root


def prepare(recipe: Path, tmp_path: Path):
    from facelab.pipeline import make_context, prepare_data
    from facelab.recipe import load_recipe

    loaded = load_recipe(recipe, [*TINY, f"data.cache_dir={tmp_path / 'cache'}"])
    return prepare_data(loaded, make_context(loaded, QuietProgress()))


def test_fairface_race7_counts_and_predefined_test(fairface, tmp_path):
    data = prepare(FAIRFACE / "race7.yaml", tmp_path)
    counts = data.counts.to_json()
    classes = ["white", "black", "latino_hispanic", "east_asian", "southeast_asian", "indian",
               "middle_eastern"]
    assert counts["found"]["race"] == {c: 5 if c == "white" else 4 for c in classes}
    assert counts["found"]["total"] == 29
    assert counts["skipped"] == {"race: value 'Martian' not in classes": 1,
                                 "image file missing": 1}
    assert counts["test"]["race"] == {c: 1 for c in classes}  # exactly the val file's rows
    frame = data.table.frame
    test_files = sorted(frame["path"].iloc[data.splits.plans["test"].base])
    assert test_files == sorted(str(fairface / f"val/{n}.jpg") for n in range(1, 8))
    # validation: 10% of the 22 training rows, carved from them; training: the rest
    assert (counts["val"]["total"], counts["train"]["total"]) == (2, 20)
    assert set(frame[SPLIT_COLUMN].iloc[data.splits.plans["val"].base]) == {"train"}
    # extra label columns for evaluate.groups: the empty age is no label for age only
    empty_age = frame[frame["path"] == str(fairface / "train/902.jpg")].iloc[0]
    assert (empty_age["age"], empty_age["race"]) == (NO_LABEL, 0)
    assert data.table.tasks["age"].classes[-1] == "70+"
    assert data.table.tasks["gender"].classes == ("male", "female")


def test_fairface_race4_with_facelab_data(fairface, tmp_path, cli_runner):
    result = cli_runner.invoke(cli, ["data", str(FAIRFACE / "race4.yaml"), "--json", *sum(
        (["--set", s] for s in [*TINY, f"data.cache_dir={tmp_path / 'cache'}"]), [])])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["found"]["race"] == {"white": 5, "black": 4, "asian": 8, "indian": 4}
    assert counts["skipped"] == {"race: value 'Latino_Hispanic' not in classes": 4,
                                 "race: value 'Middle Eastern' not in classes": 4,
                                 "race: value 'Martian' not in classes": 1,
                                 "image file missing": 1}
    assert counts["test"]["race"] == {"white": 1, "black": 1, "asian": 2, "indian": 1}
    assert (counts["val"]["total"], counts["train"]["total"]) == (2, 14)
    # and the table the terminal shows names every split
    table = cli_runner.invoke(cli, ["data", str(FAIRFACE / "race4.yaml"), *sum(
        (["--set", s] for s in [*TINY, f"data.cache_dir={tmp_path / 'cache'}"]), [])],
        terminal_width=200)
    assert table.exit_code == 0, table.output
    assert all(word in table.output for word in ("train", "val", "test", "asian"))


# --------------------------------------------------------------------------------------------
# Predefined splits in the split components
# --------------------------------------------------------------------------------------------

def _split(split_type: str, table: SampleTable, params: dict):
    component = get_registry().get("split", split_type)
    balancer = get_registry().get("balancer", "none")
    splitter = component.factory(component.validate(params, "data.split"), None)
    images = np.zeros((len(table), 2, 2, 1), np.uint8)
    return splitter.split(SplitRequest(table, images, ["y"], "y", "y",
                                       balancer.factory(balancer.validate({}, "b"), None), 0))


def predefined_table(splits: dict[str, int], source: str = "a") -> pd.DataFrame:
    values = [s for s, n in splits.items() for _ in range(n)]
    return pd.DataFrame({"path": [f"{source}{i}" for i in range(len(values))], "source": source,
                         "y": np.arange(len(values)) % 2, SPLIT_COLUMN: values})


def test_stratified_honours_predefined_splits_per_source():
    both = pd.concat([predefined_table({"train": 40, "test": 10, "": 20}, "a"),  # no val: carved
                      predefined_table({"train": 30, "val": 6, "": 20}, "b"),   # no test: carved
                      predefined_table({"": 50}, "c").drop(columns=[SPLIT_COLUMN])])
    table = SampleTable(both.fillna(""), {"y": Task("y", ("n", "p"))})
    splits = _split("stratified", table, {"test": 0.2, "val": 0.1})
    frame = table.frame
    rows = {name: plan.base for name, plan in splits.plans.items()}

    def of(split: str, source: str) -> pd.Series:
        part = frame.iloc[rows[split]]
        return part[part["source"] == source][SPLIT_COLUMN]

    # a: the 10 predefined test rows are its test set; val = 10% of 40 train + 20 free = 6
    assert of("test", "a").tolist() == ["test"] * 10
    assert len(of("val", "a")) == 6 and len(of("train", "a")) == 54
    # b: test carved from the 20 free rows only; its 6 predefined val rows are its validation
    assert len(of("test", "b")) == 4 and set(of("test", "b")) == {""}
    assert of("val", "b").tolist() == ["val"] * 6
    assert set(of("train", "b")) == {"train", ""} and len(of("train", "b")) == 46
    # c (no predefined split): as before, 10 test, 4 val, 36 train
    assert [len(of(s, "c")) for s in ("test", "val", "train")] == [10, 4, 36]
    assert not set(rows["train"]) & (set(rows["val"]) | set(rows["test"]))


def test_a_table_without_predefined_splits_splits_as_before():
    plain = predefined_table({"": 60}).drop(columns=[SPLIT_COLUMN])
    with_empty = predefined_table({"": 60})
    a = _split("stratified", SampleTable(plain, {"y": Task("y", ("n", "p"))}), {})
    b = _split("stratified", SampleTable(with_empty, {"y": Task("y", ("n", "p"))}), {})
    for split in ("train", "val", "test"):
        assert (a.plans[split].base == b.plans[split].base).all()


def test_race_2025_refuses_predefined_splits():
    table = SampleTable(predefined_table({"train": 30, "test": 10}),
                        {"y": Task("y", ("n", "p"))})
    with pytest.raises(FacelabError, match=r"^data\.split\.type: race-2025 reproduces the "
                                           r"paper's own split and cannot honour the 40 rows"):
        _split("race-2025", table, {})


def test_bad_split_values_are_an_error():
    frame = predefined_table({"train": 4, "holdout": 4})
    with pytest.raises(FacelabError, match=r"'split' column holds \['holdout'\]"):
        _split("stratified", SampleTable(frame, {"y": Task("y", ("n", "p"))}), {})


def test_the_recipes_in_own_data_md_validate(tmp_path):
    """docs/own-data.md: the folder recipe, and the same recipe reading the csv example."""
    import yaml

    from facelab.recipe import validate_recipe

    text = (RECIPES.parent / "docs" / "own-data.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    recipe, table = blocks[0], blocks[1]
    assert validate_recipe(recipe, get_registry()).tasks == ["expression"]
    recipe["data"]["dataset"] = table["data"]["dataset"]
    validated = validate_recipe(recipe, get_registry())
    params = validated.datasets["default"].params
    assert list(params.tasks) == ["expression", "age_group", "glasses"]
    assert params.tasks["glasses"].classes == ["no", "yes"]
    # and it reads the page's example table as the page says
    rows = re.search(r"```csv\n(.*?)```", text, re.S).group(1)
    write(tmp_path / "labels.csv", rows)
    for line in rows.splitlines()[1:]:
        write(tmp_path / line.split(",")[0], image_bytes(len(line)))
    dataset = {**table["data"]["dataset"], "root": str(tmp_path),
               "tables": [str(tmp_path / "labels.csv")]}
    loaded = load("csv", {k: v for k, v in dataset.items() if k != "type"}, tmp_path)
    assert loaded.frame["expression"].tolist() == [1, 0, 1]
    assert loaded.frame["age_group"].tolist() == [1, NO_LABEL, 2]
    assert loaded.frame["glasses"].tolist() == [1, 0, NO_LABEL]
    assert loaded.frame[SPLIT_COLUMN].tolist() == ["train", "train", "test"]


# --------------------------------------------------------------------------------------------
# End to end: facelab run
# --------------------------------------------------------------------------------------------

def test_run_a_folder_of_photos(workdir, cli_runner):
    for cls in ("no", "yes"):
        for i in range(8):
            seed = i + 10 * (cls == "yes")
            write(workdir / "photos" / cls / f"{i}.png", image_bytes(seed, "PNG"))
    recipe = own_recipe(workdir, f"{{type: folder, root: {workdir / 'photos'}}}")
    result = cli_runner.invoke(cli, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    output = next((workdir / "runs").glob("own-*"))
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["test"]["label"]["n"] == 3  # 20% of 16, stratified: no/yes
    assert metrics["test"]["label"]["classes"] == ["no", "yes"]


def test_run_the_fairface_recipe(fairface, workdir, cli_runner):
    args = sum((["--set", s] for s in [*TINY, f"data.cache_dir={workdir / 'cache'}"]), [])
    result = cli_runner.invoke(cli, ["run", str(FAIRFACE / "race4.yaml"), *args])
    assert result.exit_code == 0, result.output
    output = next((workdir / "runs").glob("fairface-race4-*"))
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["test"]["race"]["n"] == 5
    groups = metrics["test"]["race"]["groups"]
    assert groups["columns"] == ["race", "gender", "age"], groups
