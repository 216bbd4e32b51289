"""The quickstart main job, end to end: it learns, reports, and is tracked in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import RECIPES
from facelab.cli import cli


def test_quickstart_learns_and_is_tracked(workdir, cli_runner, shared_cache):
    result = cli_runner.invoke(cli, ["run", str(RECIPES / "quickstart.yaml"),
                                     "--set", f"data.cache_dir={shared_cache}"])
    assert result.exit_code == 0, result.output
    assert "race on test: accuracy" in result.output
    assert "confusion matrix" in result.output

    output = next((workdir / "runs").glob("quickstart-*"))
    metrics = json.loads((output / "metrics.json").read_text())
    test = metrics["test"]["race"]
    assert test["accuracy"] >= 0.8, test["accuracy"]  # chance is 0.25 (0.46 for the majority)
    assert list(test["per_class"]) == ["white", "black", "asian", "indian"]
    assert test["macro"]["support"] == test["weighted"]["support"] == test["n"]
    assert sum(map(sum, test["confusion"])) == test["n"]
    assert test["groups"]["worst"] is not None
    for name in ("recipe.yaml", "recipe.original.yaml", "history.json", "efficiency.json",
                 "data_counts.json", "model_summary.txt", "figures/curves.png",
                 "figures/confusion_test_race.png", "reports/test_race_report.csv"):
        assert (output / name).exists(), name

    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{Path('mlflow.db').absolute()}")
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.backbone.type"] == "simple-cnn"
    assert run.data.params["train.epochs"] == "10"
    assert abs(run.data.metrics["test/race/accuracy"] - test["accuracy"]) < 1e-9
    history = client.get_metric_history(run.info.run_id, "epoch/val/loss")
    assert [m.step for m in history] == list(range(1, 11))  # epochs count from 1
    del mlflow


def test_second_run_reuses_generated_data_and_crops(workdir, shared_cache):
    """The synthetic set is generated once and the crop cache is hit: zero detector calls."""
    from facelab.context import QuietProgress
    from facelab.pipeline import make_context, prepare_data
    from facelab.recipe import load_recipe

    recipe = load_recipe(RECIPES / "quickstart.yaml", [f"data.cache_dir={workdir / 'c'}",
                                                      "data.dataset.count=60"])
    first = prepare_data(recipe, make_context(recipe, QuietProgress()))
    second = prepare_data(recipe, make_context(recipe, QuietProgress()))
    assert first.detector_calls == len(first.table) > 0
    assert second.detector_calls == 0
    assert (first.images == second.images).all()
    assert first.counts == second.counts


def test_a_run_without_a_test_split_finishes(workdir, cli_runner, shared_cache):
    """``data.split.test: 0``: speed is timed on training rows; no test metrics, no crash."""
    result = cli_runner.invoke(cli, [
        "run", str(RECIPES / "quickstart.yaml"), "--set", f"data.cache_dir={shared_cache}",
        "--set", "data.split.test=0", "--set", "data.dataset.count=80",
        "--set", "data.dataset.size=24", "--set", "data.detector.size=[24, 24]",
        "--set", "train.epochs=1", "--set", "evaluate.figures=false",
        "--set", "tracking.enabled=false"])
    assert result.exit_code == 0, result.output
    output = next((workdir / "runs").glob("quickstart-*"))
    assert set(json.loads((output / "metrics.json").read_text())) == {"val"}
    assert json.loads((output / "efficiency.json").read_text())["fps"] > 0
