"""``facelab bench``: the speed table with its ratios and device, the JSON, the race paper's
Table 3 layout for several recipes, ``--log`` into MLflow and ``paper-diff`` reading the bench
run, and one-line errors. Tiny models and images; no timing is asserted beyond positivity and
consistency (the machine is shared and noisy)."""

from __future__ import annotations

import json
import math

import pytest

from conftest import RECIPES
from facelab.cli import cli

#: Small enough for seconds on two cores: 16x16 inputs, batches of 8, a 2-block CNN.
TINY = ["--set", "data.detector.size=[16,16]", "--set", "train.batch_size=8",
        "--set", "evaluate.batch_size=8", "--set", "model.backbone.filters=[4,8]",
        "--batches", "2", "--rounds", "1"]


def _positive_numbers(value, path="") -> list[str]:
    """Paths of the numbers in ``value`` that are not positive and finite."""
    bad = []
    if isinstance(value, dict):
        for key, item in value.items():
            bad += _positive_numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            bad += _positive_numbers(item, f"{path}.{i}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and value > 0):
            bad.append(path)
    return bad


def test_bench_prints_ratios_and_device_and_writes_json(workdir, cli_runner):
    out = workdir / "bench.json"
    result = cli_runner.invoke(cli, ["bench", str(RECIPES / "quickstart.yaml"), *TINY,
                                     "--epochs", "1", "--train-samples", "40",
                                     "--json", str(out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for text in ("quickstart: input 16x16x3", "plain Keras", "ratio", "training (images/s",
                 "inference (FPS, batch 8)", "inference (ms/image)", "input pipeline",
                 "RAM (MB, eq. 7", "device: "):
        assert text in result.output, text
    assert "Table 3" not in result.output  # one recipe, no --table3

    data = json.loads(out.read_text())
    assert not list(workdir.glob("*.tmp"))
    [bench] = data["recipes"]
    assert data["device"] == bench["device"] and bench["device"] in result.output
    assert _positive_numbers(bench) == []
    for key in ("train_images_per_s", "inference_fps", "pipeline_images_per_s"):
        speed = bench[key]
        assert speed["ratio"] == pytest.approx(speed["facelab"] / speed["plain"]), key
        assert f"{speed['ratio']:.2f}" in result.output
    ms = bench["inference_ms_per_image"]
    assert ms["facelab"] == pytest.approx(1000 / bench["inference_fps"]["facelab"])
    assert ms["plain"] == pytest.approx(1000 / bench["inference_fps"]["plain"])
    assert bench["input_shape"] == [16, 16, 3]
    assert (bench["batch_size"], bench["eval_batch_size"], bench["batches"]) == (8, 8, 2)
    # the parameters are the recipe's model's: what `facelab summary` counts for it
    summary = cli_runner.invoke(cli, ["summary", str(RECIPES / "quickstart.yaml"), "--json",
                                      *TINY[:8]])
    assert summary.exit_code == 0, summary.output
    counts = json.loads(summary.output)
    assert bench["parameters"] == {k: counts[k] for k in ("total", "trainable", "non_trainable")}
    assert bench["ram_mb"] == pytest.approx(counts["total"] * 4 / 1024 ** 2)
    table3 = bench["table3"]
    assert (table3["epochs"], table3["train_samples"]) == (1, 40)
    assert table3["train_samples_source"] == "--train-samples"
    assert table3["train_seconds"] == pytest.approx(40 / bench["train_images_per_s"]["facelab"])
    assert table3["fps"] == bench["inference_fps"]["facelab"]


@pytest.fixture
def paper_recipe(workdir):
    """A tiny recipe that reproduces a stand-in paper: its paper.yaml gives Table 3 numbers
    (on a Tesla T4) and the training images the paper used."""
    folder = workdir / "paper"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(
        f"extends: {RECIPES / 'quickstart.yaml'}\nname: tiny-paper\npaper: standin2025\n"
        f"tracking: {{uri: 'sqlite:///{workdir}/mlflow.db', experiment: bench-test}}\n")
    (folder / "paper.yaml").write_text(
        "kind: paper-results\npaper: standin2025\ndevice: NVIDIA Tesla T4\n"
        "recipes: {tiny: tiny.yaml}\n"
        "parameters: {tiny: {total: 1000}}\n"
        "timing: {tiny: {train_seconds_50_epochs: 99, train_images: 1234, ms_per_image: 0.5, "
        "fps: 2000}}\n")
    return folder / "tiny.yaml"


def test_table3_for_two_recipes_log_and_paper_diff(workdir, cli_runner, paper_recipe):
    out = workdir / "bench.json"
    result = cli_runner.invoke(cli, ["bench", str(RECIPES / "quickstart.yaml"),
                                     str(paper_recipe), *TINY, "--log", "--json", str(out),
                                     "--set", f"tracking.uri=sqlite:///{workdir}/mlflow.db"],
                               terminal_width=200)
    assert result.exit_code == 0, result.output
    # Table 3's layout, without --table3 since there are two recipes
    for text in ("Table 3 layout: training time (an estimate) for 10 epochs", "paper row",
                 "training time (s)", "test ms per image", "test FPS", "tiny-paper"):
        assert text in result.output, text
    by_name = {b["recipe"]: b for b in json.loads(out.read_text())["recipes"]}
    quick, tiny = by_name["quickstart"], by_name["tiny-paper"]
    # no training set size for the quickstart without its data; the paper's for tiny-paper
    assert quick["table3"]["train_seconds"] is None and "--train-samples" in result.output
    assert tiny["table3"]["train_samples"] == 1234
    assert tiny["table3"]["train_seconds"] == pytest.approx(
        10 * 1234 / tiny["train_images_per_s"]["facelab"])
    assert f"{tiny['table3']['train_seconds']:,.0f}" in result.output

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench-test")
    [bench_run] = client.search_runs([experiment.experiment_id],
                                     "tags.`facelab.bench` = 'true'")
    assert bench_run.info.status == "FINISHED" and bench_run.info.run_id in result.output
    assert bench_run.data.tags["facelab.recipe"] == "tiny-paper"
    assert bench_run.data.tags["facelab.device"] == tiny["device"]
    metrics = bench_run.data.metrics
    assert metrics["efficiency/fps"] == pytest.approx(tiny["inference_fps"]["facelab"])
    assert bench_run.data.metrics["efficiency/train_ratio"] == pytest.approx(
        tiny["train_images_per_s"]["ratio"])
    assert bench_run.data.metrics["efficiency/train_seconds"] == pytest.approx(
        tiny["table3"]["train_seconds"])
    assert bench_run.data.params["bench.batches"] == "2"

    # paper-diff of the bench run: parameters and speeds; the device is not the paper's T4
    result = cli_runner.invoke(cli, ["paper-diff", bench_run.info.run_id, "--tracking-uri", uri,
                                     "--json", "--no-log"])
    assert result.exit_code == 0, result.output
    diff = json.loads(result.output)
    lines = {line["quantity"]: line for line in diff["lines"]}
    assert set(lines) == {"total parameters", "ms per image", "fps", "train seconds 50 epochs"}
    assert lines["fps"]["run"] == pytest.approx(tiny["inference_fps"]["facelab"])
    assert lines["fps"]["paper"] == 2000
    assert "different device" in lines["fps"]["note"] and "T4" in lines["fps"]["note"]
    assert "bench estimate for 10 epochs" in lines["train seconds 50 epochs"]["note"]

    # paper-diff of a training run of the same recipe picks the bench run's speeds up
    trained = client.create_run(experiment.experiment_id, run_name="trained", tags={
        "facelab.recipe": "tiny-paper", "facelab.recipe_path": str(paper_recipe),
        "facelab.paper": "standin2025", "facelab.paper_file": str(paper_recipe.parent /
                                                                   "paper.yaml")})
    client.log_metric(trained.info.run_id, "efficiency/total_params", 1000)
    result = cli_runner.invoke(cli, ["paper-diff", trained.info.run_id, "--tracking-uri", uri,
                                     "--json", "--no-log"])
    assert result.exit_code == 0, result.output
    diff = json.loads(result.output)
    assert diff["bench_run_id"] == bench_run.info.run_id
    bench_lines = {x["quantity"]: x for x in diff["lines"] if x["section"] == "speed (bench)"}
    assert bench_lines["fps"]["run"] == pytest.approx(tiny["inference_fps"]["facelab"])
    assert bench_lines["ms per image"]["paper"] == 0.5
    assert "different device" in bench_lines["fps"]["note"]
    result = cli_runner.invoke(cli, ["paper-diff", trained.info.run_id, "--tracking-uri", uri,
                                     "--no-log"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"from bench run {bench_run.info.run_id[:8]}" in result.output


@pytest.mark.parametrize("args, expected", [
    (["nope.yaml"], "nope.yaml: recipe file not found"),
    ([str(RECIPES)], "is a folder; expected a recipe .yaml file"),
    ([str(RECIPES / "quickstart.yaml"), "--set", "train.epochz=3"], "train.epochz"),
    ([str(RECIPES / "quickstart.yaml"), "--set", "train.epochs"], "train.epochs"),
    ([str(RECIPES / "quickstart.yaml"), "--batches", "0"], "--batches: "),
    ([str(RECIPES / "quickstart.yaml"), "--rounds", "many"], "--rounds many: expected a whole"),
    ([str(RECIPES / "quickstart.yaml"), "--train-samples", "-5"], "--train-samples: "),
    ([str(RECIPES / "quickstart.yaml"), "--epochs", "100001"], "--epochs: "),
])
def test_bad_input_is_one_line_and_exit_2(workdir, cli_runner, args, expected):
    result = cli_runner.invoke(cli, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and expected in result.output, result.output
