"""``facelab sensitivity`` on a briefly trained quickstart run: the run's own detector flips
nothing and scores the run's test accuracy; another detector's numbers equal a computation by
hand (each test image detected, cropped and classified one by one); outputs in the run folder
and in MLflow; bad input exits 2 naming the option."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fixtures_runs import QUICKSTART, run_quickstart
from facelab.cli import cli
from facelab.data import Task

TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=3", "data.augment=[]", "evaluate.figures=false",
        "evaluate.timing_batches=1"]
#: Haar finds "faces" in a few synthetic drawings only with these; the rest keep the whole image.
LOOSE_HAAR = "haar:{min_neighbors: 0, min_face_size: 4}"
LOOSE_HAAR_DROP = "haar:{min_neighbors: 0, min_face_size: 4, no_face: drop}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quickstart trained for three epochs on 200 tiny images, tracked in MLflow, and
    `facelab sensitivity` run on it by MLflow run id (JSON)."""
    from click.testing import CliRunner

    folder = tmp_path_factory.mktemp("sensitivity")
    overrides = [*TINY, f"data.cache_dir={folder / 'cache'}"]
    with pytest.MonkeyPatch.context() as patch:
        run_id, output = run_quickstart(folder, overrides, patch)
        report = CliRunner().invoke(cli, ["sensitivity", run_id[:8], "--detector", "none",
                                          "--detector", LOOSE_HAAR, "--detector",
                                          LOOSE_HAAR_DROP, "--json"])
        assert report.exit_code == 0, report.output
        yield {"folder": folder, "run_id": run_id, "output": output, "overrides": overrides,
               "report": json.loads(report.stdout)}


def test_flip_counts_by_hand():
    from facelab.plugins.responsible.sensitivity import task_sensitivity

    task = Task("race", ("white", "black", "asian"))
    y_true = np.array([0, 0, 1, 1, 2, -1])
    run = np.array([0, 1, 1, 1, 2, 0])
    other = np.array([0, 0, 2, 1, 1, 1])  # flips rows 1, 2, 4 and 5
    gender = np.array(["male", "female", "male", "female", "", "male"], dtype=object)
    result = task_sensitivity(task, y_true, other, run, {"gender": gender})
    assert (result.flips.n, result.flips.flips) == (6, 4)
    assert result.accuracy == 3 / 5 and result.run_accuracy == 4 / 5  # the unlabelled row out
    assert {k: (v.n, v.flips) for k, v in result.per_class.items()} == \
        {"white": (2, 1), "black": (2, 1), "asian": (1, 1)}
    assert {k: (v.n, v.flips) for k, v in result.per_group["gender"].items()} == \
        {"female": (2, 1), "male": (3, 2)}  # "" (unknown) is no group
    assert result.to_json()["per_group"]["gender"]["male"]["flip_rate"] == 2 / 3


def test_the_runs_own_detector_flips_nothing(trained):
    report = trained["report"]
    metrics = json.loads((trained["output"] / "metrics.json").read_text())["test"]["race"]
    none = report["detectors"][0]
    assert none["label"] == "none" and none["detector"] == {"type": "none", "size": [24, 24],
                                                            "colour": "rgb"}
    assert report["test_images"] == none["faces_found"] == none["compared"] == metrics["n"]
    race = none["tasks"]["race"]
    assert (race["n"], race["flips"], race["flip_rate"]) == (metrics["n"], 0, 0.0)
    assert race["accuracy"] == race["run_detector_accuracy"] == pytest.approx(metrics["accuracy"])
    assert sum(c["n"] for c in race["per_class"].values()) == metrics["n"]
    assert set(race["per_group"]) == {"gender", "age"}  # evaluate.groups, other labels
    assert sum(g["n"] for g in race["per_group"]["gender"].values()) == metrics["n"]
    # the fairness report's groups, names (age groups) and order
    fairness = json.loads((trained["output"] / "fairness.json").read_text())["test"]["race"]
    for column in ("gender", "age"):
        named = [g["group"][column] for g in fairness["groups"] if list(g["group"]) == [column]]
        assert list(race["per_group"][column]) == named
    assert set(race["per_group"]["age"]) <= {"0-19", "20-39", "40-59", "60+"}
    assert report["run"]["mlflow_run_id"] == trained["run_id"]


def test_another_detector_equals_a_computation_by_hand(trained):
    from facelab.context import BuildContext, QuietProgress
    from facelab.images import read_rgb
    from facelab.pipeline import make_context, prepare_data
    from facelab.plugins.deploy.model_source import resolve
    from facelab.plugins.responsible.sensitivity import detector_request
    from facelab.recipe import load_recipe

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(trained["folder"])
        runtime = resolve(trained["run_id"]).runtime()
        recipe = load_recipe(QUICKSTART, trained["overrides"])
        data = prepare_data(recipe, make_context(recipe, QuietProgress()))
    rows = data.splits.plans["test"].base
    labels = data.labels("race")[rows]
    own = runtime(data.images[rows].astype(np.float32))["race"].argmax(axis=1)
    for text, result in zip((LOOSE_HAAR, LOOSE_HAAR_DROP), trained["report"]["detectors"][1:]):
        component, values = detector_request(text)
        detector = component.factory(component.validate({**values, "size": [24, 24]}, "d"),
                                     BuildContext(Path("/tmp")))
        found = [detector.detect([read_rgb(p)])[0] for p in data.table.frame["path"].iloc[rows]]
        kept = np.array([f.crop is not None for f in found])
        crops = np.stack([f.crop for f in found if f.crop is not None]).astype(np.float32)
        predicted = runtime(crops)["race"].argmax(axis=1)
        flipped = predicted != own[kept]
        assert result["label"] == text
        assert result["faces_found"] == sum(f.status == "face" for f in found) > 0
        assert result["compared"] == kept.sum()
        race = result["tasks"]["race"]
        assert (race["n"], race["flips"]) == (kept.sum(), flipped.sum())
        assert race["accuracy"] == pytest.approx((predicted == labels[kept]).mean())
        assert race["run_detector_accuracy"] == pytest.approx((own[kept] == labels[kept]).mean())
        for i, name in enumerate(data.tasks["race"].classes):
            assert race["per_class"][name]["flips"] == flipped[labels[kept] == i].sum()
    drop = trained["report"]["detectors"][2]
    assert drop["compared"] == drop["faces_found"]  # no face: dropped, so only found faces


def test_outputs_in_the_run_folder_and_in_mlflow(trained):
    from mlflow.tracking import MlflowClient

    output = trained["output"]
    assert json.loads((output / "sensitivity.json").read_text()) == trained["report"]
    assert (output / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(f"sqlite:///{trained['folder'] / 'mlflow.db'}")
    logged = {Path(a.path).name for a in client.list_artifacts(trained["run_id"], "sensitivity")}
    assert logged == {"sensitivity.json", "sensitivity.png"}
    card = (output / "model_card.md").read_text()  # refreshed with the sensitivity
    assert f"Detector {LOOSE_HAAR_DROP}" in card
    from facelab.plugins.mlflow.tracking import artifact_layout

    layout = artifact_layout(output)  # where an upload of the whole folder (sync) puts them
    assert [layout[output / name] for name in ("sensitivity.json", "sensitivity.png",
                                               "model_card.md")] == \
        ["sensitivity/sensitivity.json", "sensitivity/sensitivity.png", "model_card.md"]
    assert "model_card.md" in {a.path for a in client.list_artifacts(trained["run_id"])}


def test_by_output_folder_without_mlflow_prints_the_table(trained, workdir, cli_runner):
    """From a folder with no MLflow store: the run's checkpoint is its model; same numbers."""
    result = cli_runner.invoke(cli, ["sensitivity", str(trained["output"]), "--detector", "none",
                                     "--detector", LOOSE_HAAR, "--detector", LOOSE_HAAR_DROP])
    assert result.exit_code == 0, result.output
    n = trained["report"]["test_images"]
    assert "detector sensitivity of" in result.stdout and "flip rate" in result.stdout
    row = rf"│ none +│ race +│ {n}/{n} +│ +{n} +│.*│ +0/{n} +│ +0\.0% +│"
    assert re.search(row, result.stdout), result.stdout  # the run's own detector flips nothing
    assert "race: flip rate (flips/faces) by true class and group" in result.stdout
    assert "gender=female" in result.stdout and "age=20-39" in result.stdout
    again = json.loads((trained["output"] / "sensitivity.json").read_text())
    assert again["detectors"] == trained["report"]["detectors"]
    assert again["run"]["mlflow_run_id"] is None


@pytest.mark.parametrize("detector, message", [
    ("hair", "--detector: unknown detector 'hair'; did you mean 'haar'?"),
    ("haar:{min_neighbours: 3}", "--detector haar.min_neighbours: unknown key 'min_neighbours'"),
    ("haar:{min_neighbors: 500}", "--detector haar.min_neighbors: input should be less than"),
    ("haar:[1", "--detector haar:[1: unreadable parameters"),
    ("haar:{size: [32, 32]}", "--detector haar: crops of shape (32, 32, 3), but the model takes "
                              "(24, 24, 3)"),
])
def test_bad_detectors_exit_2_naming_the_option(trained, workdir, cli_runner, detector, message):
    result = cli_runner.invoke(cli, ["sensitivity", str(trained["output"]), "--detector",
                                     detector])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_bad_runs_exit_2(trained, workdir, cli_runner):
    for run, message in ((str(trained["output"] / "checkpoints"), "no model_spec.json in"),
                         ("not-a-run", "no such file or folder, and not a run id")):
        result = cli_runner.invoke(cli, ["sensitivity", run, "--detector", "haar"])
        assert result.exit_code == 2 and message in result.output, result.output
    twice = cli_runner.invoke(cli, ["sensitivity", "x", "--detector", "haar", "--detector",
                                    "haar"])
    assert twice.exit_code == 2 and "the same detector is given twice" in twice.output
