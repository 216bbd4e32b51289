"""Run lifecycle (FAILED / KILLED, never RUNNING; nothing before validation), sweeps (parent
and children, validation first), system metrics, ``facelab ui`` and CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import RECIPES
from facelab.plugins.mlflow import sweep as sweeps
from facelab.cli import cli
from facelab.errors import FacelabError

QUICKSTART = RECIPES / "quickstart.yaml"
TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=1", "evaluate.figures=false", "evaluate.timing_batches=1"]


def store():
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{Path('mlflow.db').absolute()}")


def all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def tiny(cache, *more):
    from facelab.recipe import load_recipe

    return load_recipe(QUICKSTART, [*TINY, f"data.cache_dir={cache}", *more])


@pytest.mark.parametrize("stop, status, error", [
    ("raise", "FAILED", "RuntimeError: boom in training"),
    ("sigterm", "KILLED", "terminated (SIGTERM)"),
    ("ctrl-c", "KILLED", "interrupted (Ctrl-C)"),
])
def test_a_stopped_run_ends_failed_or_killed_with_partial_artifacts(
        workdir, shared_cache, monkeypatch, stop, status, error):
    from facelab import pipeline
    from facelab.runner import run_recipe
    from facelab.errors import RunTerminated

    def train(*args, **kwargs):
        if stop == "raise":
            raise RuntimeError("boom in training")
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises long before this ends
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train", train)
    expected = {"raise": RuntimeError, "sigterm": RunTerminated, "ctrl-c": KeyboardInterrupt}
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(expected[stop]):
        run_recipe(tiny(shared_cache, "tracking.log_model=false"))
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again
    client = store()
    (run,) = all_runs(client)
    assert run.info.status == status
    assert run.data.tags["facelab.error"] == error
    assert "model.backbone.type" in run.data.params
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "recipe")}
    assert "recipe/recipe.yaml" in paths  # written before training: kept
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert "reports/model_summary.txt" in paths
    assert "reports/metrics.json" not in paths


def test_sigterm_ends_a_real_process_run_killed(workdir, shared_cache):
    """``kill PID`` on a `facelab run` in another process: the run ends KILLED, not RUNNING."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI="")
    args = [sys.executable, "-m", "facelab.cli", "run", str(QUICKSTART),
            "--set", f"data.cache_dir={shared_cache}", "--set", "train.epochs=200",
            *[x for item in TINY[:3] for x in ("--set", item)]]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        deadline = time.monotonic() + 180
        # the model summary is written inside the run, just before training (touching the
        # store while the child creates it would race its schema migration)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(1)
            if list(Path("runs").glob("quickstart-*/model_summary.txt")):
                time.sleep(3)
                break
        assert process.poll() is None, process.stdout.read()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    (run,) = all_runs(store())
    assert run.info.status == "KILLED", output
    assert run.data.tags["facelab.error"] == "terminated (SIGTERM)"


def test_validation_errors_create_no_run(workdir, cli_runner, shared_cache):
    result = cli_runner.invoke(cli, ["run", str(QUICKSTART), "--set", "model.backbone.type=nope",
                                     "--set", f"data.cache_dir={shared_cache}"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "nope" in result.output
    assert not Path("mlflow.db").exists()


def test_grid_parsing_and_points():
    assert sweeps.split_values("none,cbam") == ["none", "cbam"]
    assert sweeps.split_values("[24,24],[48,48]") == ["[24,24]", "[48,48]"]
    assert sweeps.split_values("{type: smote, k_neighbors: 3},'a,b'") == [
        "{type: smote, k_neighbors: 3}", "'a,b'"]
    sweep = sweeps.sweep_from_grid([Path("a.yaml"), Path("b.yaml")],
                                   ["model.attention.type=none,cbam,se", "train.epochs=1,2"])
    points = sweep.grid()
    assert len(points) == 12  # recipes first, the last grid key varying fastest
    assert sweep.point_overrides(points[1]) == ["model.attention.type=none", "train.epochs=2"]
    assert sweep.recipe_path(points[6]) == Path("b.yaml")
    assert sweep.label("quickstart", points[1]) == "quickstart[attention=none,epochs=2]"
    moved = sweeps.sweep_from_grid([Path("/x/a.yaml"), Path("/x/b.yaml")],
                                   ["model.attention.type=none,cbam,se", "train.epochs=1,2"])
    assert sweep.digest() == moved.digest()  # the same sweep on another machine
    assert sweeps.override_text({"type": "smote", "k_neighbors": 3}) == \
        "{type: smote, k_neighbors: 3}"
    assert sweeps.override_text("yes") == "'yes'" and sweeps.override_text([48, 48]) == "[48, 48]"
    for bad in (["model.attention.type"], ["k=a,,b"], ["k=a,a"], ["k=a", "k=b"]):
        with pytest.raises(FacelabError, match="--grid"):
            sweeps.parse_grid(bad)


def test_sweep_validates_every_combination_before_running(workdir, cli_runner, shared_cache):
    result = cli_runner.invoke(cli, ["sweep", str(QUICKSTART),
                                     "--grid", "model.attention.type=none,cbm",
                                     "--set", f"data.cache_dir={shared_cache}"])
    assert result.exit_code == 2
    assert "point 1" in result.output and "did you mean 'cbam'" in result.output
    assert not Path("mlflow.db").exists()
    result = cli_runner.invoke(cli, ["sweep", str(QUICKSTART), "--grid",
                                     "tracking.experiment=a,b"])
    assert result.exit_code == 2 and "tracking.experiment" in result.output
    result = cli_runner.invoke(cli, ["sweep", str(QUICKSTART), "--grid",
                                     "model.attention.type=none,cbam,se", "--dry-run"],
                               terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "3 grid points, all valid" in result.output
    # child run names hold square brackets; they print as they are, not as rich markup
    assert "quickstart[attention=se]" in result.output
    assert not Path("mlflow.db").exists()


def test_sweep_runs_children_under_one_parent(workdir, cli_runner, shared_cache, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    args = ["sweep", str(QUICKSTART), "--grid", "model.attention.type=none,se",
            "--set", f"data.cache_dir={shared_cache}", "--set", "tracking.log_model=false",
            "--set", "tracking.system_metrics=true"]
    for item in TINY:
        args += ["--set", item]
    result = cli_runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    client = store()
    runs = all_runs(client)
    assert len(runs) == 3
    (parent,) = [r for r in runs if r.data.tags.get("facelab.sweep_role") == "parent"]
    children = sorted((r for r in runs if r is not parent),
                      key=lambda r: int(r.data.tags["facelab.sweep_index"]))
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.grid.model.attention.type"] == "none,se"
    assert parent.data.metrics["trials_complete"] == 2
    assert [c.info.run_name for c in children] == ["quickstart[attention=none]",
                                                   "quickstart[attention=se]"]
    for child, attention in zip(children, ("none", "se")):
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["facelab.sweep_id"] == parent.data.tags["facelab.sweep_id"]
        assert child.data.params["model.attention.type"] == attention
        assert child.data.params["train.epochs"] == "1"  # --set applies under the grid
        assert not (child.outputs and child.outputs.model_outputs)  # tracking.log_model=false
        assert any(k.startswith("system/") for k in child.data.metrics), child.data.metrics
    comparison = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert comparison == {"comparison/curves.png", "comparison/per_class_f1.png",
                          "comparison/results.json"}
    table = json.loads(Path(client.download_artifacts(
        parent.info.run_id, "comparison/results.json", ".")).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    accuracies = [row["test/race/accuracy"] for row in rows]
    assert len(rows) == 2 and accuracies == sorted(accuracies, reverse=True), rows
    assert {row["run"] for row in rows} == {c.info.run_name for c in children}
    summary = Path(client.download_artifacts(parent.info.run_id, "sweep/study.json", "."))
    rows = sorted(json.loads(summary.read_text())["trials"], key=lambda r: r["slot"])
    assert [r["run_id"] for r in rows] == [c.info.run_id for c in children]
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    # `facelab runs --sweep` finds the sweep's runs
    result = cli_runner.invoke(cli, ["runs", "--sweep", parent.data.tags["facelab.sweep_id"],
                                     "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 3


def test_a_failing_child_is_recorded_and_the_sweep_goes_on(workdir, shared_cache, monkeypatch):
    from facelab.plugins.mlflow import study as studies

    calls = []

    def run(recipe, name, tags, callbacks):
        calls.append(name)
        if "cbam" in name:
            raise RuntimeError("child exploded")
        return SimpleNamespace(references={}, final_metrics=lambda: {"test/race/accuracy": 0.5})

    sweep = sweeps.sweep_from_grid([QUICKSTART], ["model.attention.type=cbam,none"],
                                   [f"data.cache_dir={shared_cache}"])
    with pytest.raises(studies.SweepFailed) as info:
        studies.run_study(sweep, run=run)
    assert calls == ["quickstart[attention=cbam]", "quickstart[attention=none]"]
    result = info.value.result
    assert {t.name: t.state for t in result.trials} == {
        "quickstart[attention=cbam]": "FAIL", "quickstart[attention=none]": "COMPLETE"}
    assert "child exploded" in result.failed[0].error
    (parent,) = all_runs(store())
    assert parent.info.status == "FAILED"
    assert "1 of 2 trials failed" in parent.data.tags["facelab.error"]


def test_reading_commands_need_a_store(workdir, cli_runner):
    for args in (["runs"], ["compare", "abcd1234", "abcd5678"], ["ui"], ["paper-diff", "abcd"]):
        result = cli_runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert "no MLflow store" in result.output and result.output.count("\n") == 1
    assert not Path("mlflow.db").exists()


def test_ui_serves_the_same_store(workdir):
    from facelab.plugins.mlflow.store import port_free

    client = store()  # creates mlflow.db
    experiment = client.create_experiment("ui-test")
    runs = [client.create_run(experiment).info.run_id for _ in range(2)]
    port = next(p for p in range(5123, 5200) if port_free("127.0.0.1", p))
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(workdir / "ui.log", "w")  # the server's own messages; stdout is ours alone
    process = subprocess.Popen([sys.executable, "-m", "facelab.cli", "ui", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=log,
                               text=True, start_new_session=True)
    try:
        first = process.stdout.readline()
        assert f"127.0.0.1:{port}" in first and "http://" not in first, first
        ready = process.stdout.readline()  # printed only once the server answers
        base = f"http://127.0.0.1:{port}"
        assert ready.startswith("MLflow UI ready: ") and \
            f"{base}/#/experiments/{experiment}/runs" in ready, ready
        with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
            assert r.status == 200
        # `facelab compare` links to the UI actually running, on its port
        compared = subprocess.run([sys.executable, "-m", "facelab.cli", "compare", *runs],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert compared.returncode == 0, compared.stdout + compared.stderr
        assert f"{base}/#/compare-runs?runs=" in compared.stdout, compared.stdout
        from mlflow.tracking import MlflowClient

        names = [e.name for e in MlflowClient(f"http://127.0.0.1:{port}").search_experiments()]
        assert names == [e.name for e in store().search_experiments()]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    # SIGTERM to `facelab ui` stops the server it started (its own process group) too
    deadline = time.monotonic() + 30
    while servers_on(port):
        assert time.monotonic() < deadline, "the MLflow server outlived `facelab ui`"
        time.sleep(0.5)


def servers_on(port: int) -> list[int]:
    """Pids of `mlflow server` processes listening on ``port`` (from /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mlflow" in b" ".join(args) and b"server" in args and str(port).encode() in args:
            found.append(int(cmdline.parent.name))
    return found


def test_paper_diff_reads_both_row_shapes():
    """One-task rows (race paper) and task -> accuracy rows with list-valued recipes (multi-task
    paper), on a stand-in run; the real race paper.yaml picks model2 for bd-am.yaml."""
    from facelab.plugins.papers import paper_diff

    paper = {"paper": "p", "device": None,
             "recipes": {"config_a": ["config-a-smile.yaml", "config-a-age.yaml"],
                         "config_b": "config-b.yaml"},
             "parameters": {"config_a": {"total": 2418146}},
             "timing": {"config_a": {"fps": 20.54}},
             "classification": {"config_a": {"smile": 95.08, "age": 65.40}}}
    row = paper_diff.pick_row(paper, "/x/config-a-smile.yaml", "multitask-2023-config-a-smile",
                              None, "paper.yaml")
    assert row == "config_a"
    run = SimpleNamespace(info=SimpleNamespace(run_id="r" * 32, run_name="a"), data=SimpleNamespace(
        metrics={"efficiency/total_params": 2418146.0, "test/smile/accuracy": 0.9,
                 "efficiency/fps": 100.0}))
    diff = paper_diff.build(run, paper, "paper.yaml", row, ["smile"], None, {"device": "CPU"})
    lines = {x.quantity: x for x in diff.lines}
    assert set(lines) == {"total parameters", "test accuracy", "fps"}  # no age line
    assert lines["total parameters"].match is True and diff.params_exact is True
    assert lines["test accuracy"].delta == pytest.approx(0.9 - 0.9508)

    race = paper_diff.load_paper(RECIPES / "race-2025" / "paper.yaml")
    assert paper_diff.pick_row(race, "/r/bd-am.yaml", "race-2025-bd-am", None, "p") == "model2"
    with pytest.raises(FacelabError, match="--row"):
        paper_diff.pick_row(race, "/r/mine.yaml", "mine", "model9", "p")
