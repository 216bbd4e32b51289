"""A run's model card and fairness record: written into the output folder, logged to MLflow
with the fairness table and figure, and shown in the terminal. One tiny real run, tracked in a
sqlite store, with a split that carves validation from the balanced set (synthetic samples)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import RECIPES
from facelab.cli import cli

TINY = ["data.dataset.count=120", "data.dataset.size=16", "data.detector.size=[16,16]",
        "train.epochs=1", "evaluate.timing_batches=1", "evaluate.examples=0",
        "evaluate.bootstrap=300", "evaluate.min_group_size=8", "evaluate.groups=[age]",
        # validation carved after balancing: it holds repeated (synthetic) training images
        "data.split.type=race-2025", "data.balancer.type=smote",
        "tracking.log_model=false", "tracking.system_metrics=false",
        "tracking.experiment=card"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, shared_cache):
    """The CLI's output, the run's output folder and its MLflow run id."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("card")
    args = ["run", str(RECIPES / "quickstart.yaml"), "--set", f"data.cache_dir={shared_cache}",
            "--set", f"output_dir={root / 'runs'}",
            "--set", f"tracking.uri=sqlite:///{root / 'mlflow.db'}"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args, terminal_width=120, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    output = next((root / "runs").glob("quickstart-*"))
    run_id = re.search(r"MLflow run: (\w+)", result.output).group(1)
    return {"output": result.output, "folder": output, "run_id": run_id,
            "uri": f"sqlite:///{root / 'mlflow.db'}", "root": root}


def _card(folder: Path) -> str:
    return (folder / "model_card.md").read_text(encoding="utf-8")


def test_card_states_use_labels_data_split_and_versions(tracked_run):
    from facelab.manager import get_registry

    folder = tracked_run["folder"]
    card = _card(folder)
    flat = " ".join(card.split())
    assert "## Intended use" in card and "## Uses it is not fit for" in card
    assert "Inferring race or gender from a face is contested" in flat
    assert "annotators' perceptions" in flat and "not the identities of the people" in flat
    # the licence and citation the dataset plugin declares
    synthetic = get_registry().get("dataset", "synthetic")
    terms = synthetic.terms(synthetic.params())
    assert f"Licence / terms of use: {terms['licence']}" in card
    assert f"Citation: {terms['citation']}" in card
    # counts and the synthetic validation samples, from data_counts.json
    counts = json.loads((folder / "data_counts.json").read_text())
    assert counts["val"]["synthetic"] > 0
    assert (f"The validation set contains {counts['val']['synthetic']} synthetic samples** "
            f"(of {counts['val']['total']})") in flat
    assert "Class balance of `race`" in card
    assert f"| test | {' | '.join(str(v) for v in counts['test']['race'].values())} |" in card
    # versions: facelab, the recipe hash, the plugin packages
    tags = json.loads((folder / "run.json").read_text())["tags"]
    assert f"| facelab version | {tags['facelab.version']} |" in card
    assert f"hash {tags['facelab.recipe_hash']}" in card
    assert f"| plugin packages | {tags['facelab.plugins']} |" in card
    assert "## Detector sensitivity\n\nNot measured." in card


def test_card_and_fairness_json_hold_the_same_numbers_with_intervals(tracked_run):
    folder = tracked_run["folder"]
    card = _card(folder)
    fairness = json.loads((folder / "fairness.json").read_text())
    test = fairness["test"]["race"]
    assert test["columns"] == ["race", "age", "gender"]   # the task, evaluate.groups, other task
    assert test["resamples"] == 300 and test["min_group_size"] == 8
    overall = test["overall"]["accuracy"]
    assert overall["low"] <= overall["value"] <= overall["high"]
    metrics = json.loads((folder / "metrics.json").read_text())["test"]["race"]
    assert overall["value"] == pytest.approx(metrics["accuracy"])
    assert overall["n"] == metrics["n"]
    assert (f"`race` on test (n={metrics['n']}): accuracy {overall['value']:.3f} "
            f"[{overall['low']:.3f}, {overall['high']:.3f}]") in card
    white = test["overall"]["recall"]["white"]
    assert f"| white | {metrics['per_class']['white']['precision']:.3f} | " \
           f"{white['value']:.3f} [{white['low']:.3f}, {white['high']:.3f}]" in card
    worst = test["worst"]
    assert worst is not None and worst["n"] >= 8
    label = " x ".join(f"{k}={v}" for k, v in worst["group"].items())
    assert f"- Worst group: {label}, accuracy {worst['accuracy']['value']:.3f} [" in card
    for group in test["groups"]:
        if len(group["group"]) == 1:   # every single-column group is listed, flagged or not
            name = " x ".join(f"{k}={v}" for k, v in group["group"].items())
            flag = "too small to judge" if group["small"] else ""
            assert f"| {name} | {group['n']} | " in card and (flag in card)
    # the terminal summary of the same numbers
    output = " ".join(tracked_run["output"].split())
    assert "race fairness on test (95% bootstrap intervals, 300 resamples" in output
    assert f"worst group: {label}: accuracy {worst['accuracy']['value']:.3f}" in output


def test_mlflow_run_has_the_fairness_table_figure_and_card(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracked_run["uri"])
    run_id = tracked_run["run_id"]
    reports = {a.path for a in client.list_artifacts(run_id, "reports")}
    assert "reports/fairness.json" in reports
    assert "model_card.md" in {a.path for a in client.list_artifacts(run_id)}  # at the top
    assert "figures/fairness_test_race.png" in {a.path for a in client.list_artifacts(
        run_id, "figures")}
    local = Path(client.download_artifacts(run_id, "tables/fairness.json",
                                           str(tracked_run["root"])))
    table = json.loads(local.read_text())
    columns = table["columns"]
    assert columns == ["split", "task", "group", "metric", "class", "value", "low", "high", "n",
                       "flag", "note"]
    rows = [dict(zip(columns, r)) for r in table["data"]]
    everyone = next(r for r in rows if r["split"] == "test" and r["group"] == "all"
                    and r["metric"] == "accuracy")
    fairness = json.loads((tracked_run["folder"] / "fairness.json").read_text())
    overall = fairness["test"]["race"]["overall"]["accuracy"]
    # (MLflow's table keeps 10 digits)
    assert [everyone[k] for k in ("value", "low", "high", "n")] == pytest.approx(
        [overall[k] for k in ("value", "low", "high", "n")], abs=1e-9)
    assert {"too small to judge", "worst group"} <= {r["flag"] for r in rows}
    assert {"accuracy", "recall", "fpr", "accuracy_gap"} == {r["metric"] for r in rows}
    card = Path(client.download_artifacts(run_id, "model_card.md",
                                          str(tracked_run["root"])))
    assert card.read_text() == _card(tracked_run["folder"])


def test_card_shows_a_datasets_declared_licence_and_sensitivity(tracked_run, tmp_path):
    """Refreshed from the folder alone: a UTKFace recipe shows UTKFace's non-commercial terms;
    a sensitivity.json (as `facelab sensitivity` writes it) gets its section."""
    from facelab.plugins.responsible.model_card import write_model_card

    folder = tmp_path / "run"
    shutil.copytree(tracked_run["folder"], folder, ignore=shutil.ignore_patterns("checkpoints"))
    info = json.loads((folder / "run.json").read_text())
    recipe = yaml.safe_load(info["recipe"]["resolved"])
    recipe["data"]["dataset"] = {"type": "utkface", "root": str(tmp_path)}
    info["recipe"]["resolved"] = yaml.safe_dump(recipe)
    (folder / "run.json").write_text(json.dumps(info))
    (folder / "sensitivity.json").write_text(json.dumps({
        "run": {"description": "x"}, "run_detector": {"type": "none"}, "test_images": 37,
        "detectors": [{"label": "haar", "detector": {"type": "haar"}, "test_images": 37,
                       "faces_found": 30, "compared": 30, "statuses": {"face": 30},
                       "tasks": {"race": {"accuracy": 0.5, "run_detector_accuracy": 0.6,
                                          "n": 30, "flips": 6, "flip_rate": 0.2,
                                          "per_class": {"white": {"n": 10, "flips": 1,
                                                                  "flip_rate": 0.1}},
                                          "per_group": {"gender": {"female": {
                                              "n": 12, "flips": 4, "flip_rate": 1 / 3}}}}}}],
        "future_key": [1, 2]}))
    card = write_model_card(folder).read_text()
    flat = " ".join(card.split())
    assert "dataset `utkface`" in card
    assert "non-commercial research purposes only" in flat
    assert "Zhang, Z., Song, Y., Qi, H." in flat
    assert "Detector haar (`haar`): faces found 30 of 37" in card
    assert "flips 20.0% (6/30)" in card and "per gender: female 33.3% (4/12)" in card
    assert "- future_key: [1, 2]" in card


def test_card_says_not_declared_for_a_dataset_without_terms():
    from facelab.plugins.responsible.model_card import NOT_DECLARED, dataset_terms

    terms = dataset_terms({"type": "folder", "root": "/nowhere"}, "data.dataset")
    assert terms["licence"] is None and terms["citation"] is None
    declared = dataset_terms({"type": "folder", "root": "/nowhere", "licence": "CC BY 4.0"},
                             "data.dataset")
    assert declared["licence"] == "CC BY 4.0"
    unknown = dataset_terms({"type": "no-such"}, "data.dataset")
    assert unknown["licence"] is None and "no-such" in unknown["problem"]
    assert "not declared" in NOT_DECLARED


def test_every_builtin_dataset_declares_its_terms():
    from facelab.manager import get_registry

    for component in get_registry().find("dataset", include_builtin=True):
        if component.origin.builtin:
            assert component.licence is not None and component.citation is not None, \
                component.name


def test_plugins_detail_view_shows_a_datasets_licence_and_citation(cli_runner):
    """`facelab plugins dataset --all`: what the dataset plugin declares, as the card shows it;
    for csv (terms given in the recipe) where they come from."""
    from facelab.manager import get_registry

    utkface = get_registry().get("dataset", "utkface")  # `root` is required: no defaults
    terms = utkface.terms(utkface.params.model_construct(root="/x"))
    shown = json.loads(cli_runner.invoke(cli, ["plugins", "dataset", "*", "--all",
                                               "--json"]).output)
    by_name = {c["name"]: c for c in shown}
    assert (by_name["utkface"]["licence"], by_name["utkface"]["citation"]) == \
        (terms["licence"], terms["citation"])
    assert by_name["csv"]["licence"] == "the recipe's `licence` parameter, else not declared"
    assert "licence" not in json.loads(cli_runner.invoke(
        cli, ["plugins", "backbone", "--all", "--json"]).output)[0]
    table = cli_runner.invoke(cli, ["plugins", "dataset", "utkface", "--all"])
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines() if "(licence)" in line]
    assert len(rows) == 1 and terms["licence"].split()[0] in rows[0]
