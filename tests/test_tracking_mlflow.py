"""MLflow as the place where configurations are compared, end to end, against a real
``mlflow server`` (a remote store must work like the embedded one) and in a real browser.

Two tiny quickstart runs differ in one component (attention none vs cbam). We assert through
MlflowClient: params, tags, per-epoch metric histories, final metrics, artifacts in tidy folders,
the dataset inputs, the logged model (reloaded and predicting); then ``facelab runs``,
``facelab compare`` and ``facelab paper-diff``; then the MLflow UI in chromium via playwright.

Set FACELAB_DOCS_SCREENSHOTS=docs/images to refresh the screenshots used by the docs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import RECIPES
from mlflow_server import start_server, stop_server
from facelab.cli import cli

TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=2", "evaluate.examples=4", "evaluate.timing_batches=1"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_cache):
    """A server, a paper recipe folder (quickstart + a small paper.yaml) and two runs."""
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp("tracking")
    server, url = start_server(root)
    old_cwd = os.getcwd()
    os.chdir(root)
    try:
        # A "paper" recipe folder: the quickstart with a paper key, and the paper's numbers.
        folder = root / "recipes" / "tiny-paper"
        folder.mkdir(parents=True)
        recipe = yaml.safe_load((RECIPES / "quickstart.yaml").read_text())
        recipe["paper"] = "tiny2025"
        (folder / "tiny.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        (folder / "paper.yaml").write_text(yaml.safe_dump({
            "kind": "paper-results", "paper": "tiny2025", "device": "NVIDIA Tesla T4",
            "recipes": {"model-a": "other.yaml", "model-b": "tiny.yaml"},
            "parameters": {"model-b": {"total": 24180, "trainable": 99, "ram_mb": 0.1}},
            "timing": {"model-b": {"ms_per_image": 0.3, "fps": 3352}},
            "classification": {"model-b": {"accuracy": 88.19, "per_class": {
                "white": {"precision": 0.89, "recall": 0.93, "f1": 0.91, "support": 37}}}}}))
        runner = CliRunner()
        runs = {}
        for attention in ("none", "cbam"):
            args = ["run", str(folder / "tiny.yaml"), "--set", f"data.cache_dir={shared_cache}",
                    "--set", f"tracking.uri={url}", "--set", "tracking.experiment=compare-me",
                    "--set", f"model.attention.type={attention}"]
            for item in TINY:
                args += ["--set", item]
            result = runner.invoke(cli, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
            runs[attention] = re.search(r"MLflow run: (\w+)", result.output).group(1)
        args = ["sweep", str(folder / "tiny.yaml"), "--grid", "model.attention.type=none,se",
                "--set", f"data.cache_dir={shared_cache}", "--set", f"tracking.uri={url}",
                "--set", "tracking.experiment=compare-me", "--set", "tracking.log_model=false"]
        for item in TINY:
            args += ["--set", item]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        sweep = re.search(r"parent run (\w+)", result.output).group(1)
        yield {"url": url, "root": root, "runs": runs, "runner": runner, "folder": folder,
               "sweep": sweep}
    finally:
        os.chdir(old_cwd)
        stop_server(server)


@pytest.fixture(scope="module")
def client(world):
    from mlflow.tracking import MlflowClient

    return MlflowClient(world["url"])


def test_params_tags_and_metric_histories(world, client):
    a, b = (client.get_run(world["runs"][k]) for k in ("none", "cbam"))
    for run in (a, b):
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["facelab.recipe"] == "quickstart"
        assert re.fullmatch(r"[0-9a-f]{12}", tags["facelab.recipe_hash"])
        assert tags["facelab.paper"] == "tiny2025"
        assert tags["facelab.paper_file"] == str(world["folder"] / "paper.yaml")
        assert tags["facelab.recipe_path"] == str(world["folder"] / "tiny.yaml")
        assert tags["facelab.version"]
        assert tags["facelab.plugins"].startswith("facelab==")
        assert "simple-cnn (facelab" in tags["facelab.component.model.backbone"]
        assert "model.attention.type=" in tags["facelab.overrides"]
        assert tags["mlflow.note.content"].startswith("Small CNN")
        # per-epoch metrics, one point per epoch, under train/ and val/
        for key in ("epoch/train/loss", "epoch/train/race/accuracy", "epoch/val/loss",
                    "epoch/val/race/accuracy", "epoch/learning_rate"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == [1, 2], key  # epochs count from 1
        # final metrics: overall, per class, macro/weighted, per group, efficiency
        for key in ("test/race/accuracy", "test/race/f1/asian", "test/race/recall_macro",
                    "test/race/precision_weighted", "test/race/worst_group_accuracy",
                    "efficiency/total_params", "efficiency/fps", "efficiency/ms_per_image"):
            assert key in run.data.metrics, key
    assert a.data.params["model.attention.type"] == "none"
    assert b.data.params["model.attention.type"] == "cbam"
    differing = {k for k in a.data.params if a.data.params[k] != b.data.params.get(k)}
    assert differing == {"model.attention.type"}
    # the run names say what differs: the recipe and its overrides, storage settings left out
    assert a.info.run_name.startswith("quickstart[attention=none,")
    assert b.info.run_name.startswith("quickstart[attention=cbam,")
    assert "cache_dir" not in a.info.run_name and "uri=" not in a.info.run_name
    assert a.data.tags["facelab.recipe_hash"] != b.data.tags["facelab.recipe_hash"]
    assert b.data.metrics["efficiency/total_params"] > a.data.metrics["efficiency/total_params"]


def test_artifacts_are_in_tidy_folders(world, client):
    run_id = world["runs"]["cbam"]

    def listing(path=None):
        return {a.path for a in client.list_artifacts(run_id, path)}

    assert {"recipe", "reports", "figures"} <= listing()
    assert listing("recipe") >= {"recipe/recipe.yaml", "recipe/recipe.original.yaml",
                                 "recipe/overrides.txt", "recipe/paper.yaml"}
    assert listing("reports") >= {"reports/metrics.json", "reports/efficiency.json",
                                  "reports/model_summary.txt", "reports/test_race_report.csv"}
    assert listing("figures") >= {"figures/curves.png", "figures/confusion_test_race.png",
                                  "figures/per_class_test_race.png"}
    local = client.download_artifacts(run_id, "recipe/overrides.txt", str(world["root"]))
    assert "model.attention.type=cbam" in Path(local).read_text()
    summary = client.download_artifacts(run_id, "reports/model_summary.txt", str(world["root"]))
    assert "cbam" in Path(summary).read_text().lower()


def test_dataset_inputs_per_split(world, client):
    run = client.get_run(world["runs"]["none"])
    inputs = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i
              for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    counts = json.loads(Path(client.download_artifacts(
        run.info.run_id, "reports/data_counts.json", str(world["root"]))).read_text())
    for context, split in (("train", "train"), ("validation", "val"), ("test", "test")):
        dataset = inputs[context].dataset
        assert dataset.name == f"synthetic-{split}"
        assert dataset.digest
        assert json.loads(dataset.profile)["num_rows"] == counts[split]["total"]
        columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert {"path", "source", "race", "synthetic"} <= columns
        assert str(Path(json.loads(dataset.source)["uri"])).startswith(str(Path("/")))


def test_logged_model_reloads_and_predicts(world, client):
    import mlflow
    from mlflow.models import get_model_info

    from facelab.plugins.mlflow.tracking import load_model

    run = client.get_run(world["runs"]["cbam"])
    outputs = run.outputs.model_outputs
    assert len(outputs) == 1
    mlflow.set_tracking_uri(world["url"])
    uri = f"models:/{outputs[0].model_id}"
    info = get_model_info(uri)
    assert info.signature is not None
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 24, 24, 3]
    assert {o["name"] for o in info.signature.outputs.to_dict()} == {"race"}
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text()
    assert re.search(r"^tensorflow==\S+$", requirements, re.M)
    assert re.search(r"^facelab==\S+$", requirements, re.M)
    model = load_model(uri)
    assert any("cbam" in layer.name for layer in model.layers)
    probs = model.predict(np.random.default_rng(0).uniform(0, 255, (3, 24, 24, 3))
                          .astype("float32"), verbose=0)
    assert probs["race"].shape == (3, 4)
    np.testing.assert_allclose(probs["race"].sum(axis=1), 1.0, rtol=1e-4)


def test_logged_model_carries_the_final_results(world, client):
    """The model's page shows the run's final metrics (not an epoch's), the datasets they were
    measured on, and the model spec (tasks, class names, input, detector)."""
    from mlflow.models import Model

    from facelab.results import parse_metric_name

    run = client.get_run(world["runs"]["cbam"])
    model_id = run.outputs.model_outputs[0].model_id
    logged = client.get_logged_model(model_id)
    on_model = {m.key: m.value for m in logged.metrics if not m.key.startswith("system/")}
    final = {k: v for k, v in run.data.metrics.items()
             if parse_metric_name(k) and parse_metric_name(k).kind in ("final", "efficiency")}
    assert on_model == final and "test/race/f1/white" in on_model
    assert {m.dataset_name for m in logged.metrics if m.key.startswith("test/")} == \
        {"synthetic-test"}
    import mlflow

    mlflow.set_tracking_uri(world["url"])
    model = Model.load(f"models:/{model_id}")
    spec = model.metadata["facelab"]
    assert spec["tasks"] == {"race": ["white", "black", "asian", "indian"]}
    assert spec["input_shape"] == [24, 24, 3] and spec["detector"]["type"] == "none"
    assert model.saved_input_example_info is not None
    # system metrics are on by default
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    # per-class scores as a browsable MLflow table
    tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert "tables/test_race_per_class.json" in tables


def test_runs_and_compare_commands(world):
    runner, url = world["runner"], world["url"]
    a, b = world["runs"]["none"], world["runs"]["cbam"]
    result = runner.invoke(cli, ["runs", "--tracking-uri", url, "--experiment", "compare-me",
                                 "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert {a, b} <= {r["run_id"] for r in rows} and len(rows) == 5  # and a sweep of two
    assert all("test/race/accuracy" in r["metrics"] for r in rows
               if r["name"] != "quickstart sweep")
    assert any(r["name"].startswith("quickstart[attention=cbam") for r in rows)
    result = runner.invoke(cli, ["runs", "--tracking-uri", url])
    assert result.exit_code == 0, result.output
    assert a[:8] in result.output and "quickstart" in result.output

    result = runner.invoke(cli, ["compare", a[:8], b, "--tracking-uri", url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["params"]["model.attention.type"] == ["none", "cbam"]
    assert "train.epochs" not in data["params"]
    assert "test/race/precision/white" in data["metrics"]
    assert data["metrics"]["efficiency/total_params"][0] < data["metrics"]["efficiency/total_params"][1]
    result = runner.invoke(cli, ["compare", a, b, "--tracking-uri", url], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "model.attention.type" in result.output and "cbam" in result.output
    assert "test/race/f1/asian" in result.output
    assert "compare-runs?runs=" in result.output

    result = runner.invoke(cli, ["compare", a, "ffff0000", "--tracking-uri", url])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "ffff0000" in result.output


def test_paper_diff_prints_and_logs(world, client):
    runner, url = world["runner"], world["url"]
    run_id = world["runs"]["none"]
    result = runner.invoke(cli, ["paper-diff", run_id, "--tracking-uri", url, "--json"])
    assert result.exit_code == 0, result.output
    diff = json.loads(result.output)
    assert diff["row"] == "model-b"
    assert diff["paper_device"] == "NVIDIA Tesla T4" and "CPU" in diff["run_device"]
    lines = {line["quantity"]: line for line in diff["lines"]}
    assert lines["total parameters"]["match"] is True          # 24,180 both
    assert lines["trainable parameters"]["match"] is False     # the fixture says 99
    assert diff["params_exact"] is False
    accuracy = lines["test accuracy"]
    assert accuracy["paper"] == pytest.approx(0.8819)          # 88.19 % read as a rate
    run = client.get_run(run_id)
    assert accuracy["run"] == pytest.approx(run.data.metrics["test/race/accuracy"])
    assert accuracy["delta"] == pytest.approx(accuracy["run"] - 0.8819)
    assert lines["white support (test images)"]["paper"] == 37
    assert "fps" in lines and "T4" in lines["fps"]["note"]
    # logged to the run: artifact, delta metrics, tags
    assert run.data.metrics["paper_diff/test/race/accuracy"] == pytest.approx(accuracy["delta"])
    assert run.data.tags["facelab.paper_row"] == "model-b"
    assert run.data.tags["facelab.paper_params_exact"] == "false"
    assert {a.path for a in client.list_artifacts(run_id, "paper_diff")} == {
        "paper_diff/paper_diff.json", "paper_diff/paper_diff.md"}
    # the table on the terminal; a wrong row is one line, exit 2
    result = runner.invoke(cli, ["paper-diff", run_id[:8], "--tracking-uri", url, "--no-log"],
                           terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "exact" in result.output
    assert "[green]" not in result.output and "[red]" not in result.output
    result = runner.invoke(cli, ["paper-diff", run_id, "--tracking-uri", url, "--row", "nope"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "model-b" in result.output


def test_mlflow_ui_in_a_real_browser(world, client):
    """The experiment's run list shows both runs; the compare view shows the difference."""
    from playwright.sync_api import sync_playwright

    url = world["url"]
    a, b = world["runs"]["none"], world["runs"]["cbam"]
    experiment = client.get_run(a).info.experiment_id
    shots = Path(os.environ.get("FACELAB_DOCS_SCREENSHOTS") or world["root"] / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{url}/#/experiments/{experiment}/runs")
            for name in ("quickstart[attention=none", "quickstart[attention=cbam"):
                page.get_by_text(name).first.wait_for(timeout=90_000)
            _tidy(page)
            page.screenshot(path=str(shots / "mlflow-runs.png"))

            runs = json.dumps([a, b])
            page.goto(f"{url}/#/compare-runs?runs={runs}&experiments={json.dumps([experiment])}")
            page.get_by_text("Comparing 2 Runs").first.wait_for(timeout=90_000)
            page.get_by_text("model.attention.type").first.wait_for(timeout=60_000)
            page.get_by_text("cbam", exact=True).first.wait_for(timeout=60_000)
            # the metrics table is rendered when scrolled to
            page.mouse.move(700, 600)
            metric = page.get_by_text("test/race/accuracy").first
            for _ in range(60):  # below every parameter: scroll until it is rendered
                if metric.count():
                    break
                page.mouse.wheel(0, 700)
                page.wait_for_timeout(300)
            metric.wait_for(state="attached", timeout=60_000)
            metric.scroll_into_view_if_needed(timeout=30_000)
            metric.wait_for(timeout=60_000)
            _tidy(page)
            page.screenshot(path=str(shots / "mlflow-compare.png"), full_page=True)

            page.goto(f"{url}/#/experiments/{experiment}/runs/{b}/artifacts")
            page.get_by_text("figures", exact=True).first.wait_for(timeout=90_000)
            _tidy(page)
            page.screenshot(path=str(shots / "mlflow-artifacts.png"))

            # the sweep's parent holds the comparison of its children
            page.goto(f"{url}/#/experiments/{experiment}/runs/{world['sweep']}/artifacts")
            page.get_by_text("comparison", exact=True).first.click(timeout=90_000)
            page.get_by_text("curves.png", exact=True).first.click(timeout=60_000)
            page.get_by_role("img").first.wait_for(timeout=60_000)  # the PNG's preview
            _tidy(page)
            page.screenshot(path=str(shots / "mlflow-sweep-comparison.png"))
        finally:
            browser.close()
    for name in ("mlflow-runs.png", "mlflow-compare.png", "mlflow-artifacts.png",
                 "mlflow-sweep-comparison.png"):
        assert (shots / name).stat().st_size > 10_000


def _tidy(page) -> None:
    """Close the assistant panel and any tour pop-up, for readable screenshots (best effort)."""
    for name in ("Got it", "Close"):
        try:
            button = page.get_by_role("button", name=name).first
            if button.is_visible(timeout=500):
                button.click(timeout=2_000)
        except Exception:
            pass
    page.wait_for_timeout(500)
