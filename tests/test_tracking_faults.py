"""Runs that survive their tracking store (issue 13): a store that does not answer refuses the
run before any work; a store that dies mid-run costs no training, and `facelab sync` uploads
what it missed; two runs share a cold cache and a fresh sqlite store; the `facelab ui` server
dies with its parent, even a SIGKILLed one. Every process here is real and stopped here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import RECIPES
from mlflow_server import free_port, start_server, stop_server

QUICKSTART = RECIPES / "quickstart.yaml"
TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=1", "evaluate.figures=false", "evaluate.timing_batches=1"]
ENV = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI="",
           MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")


def facelab(*args: str) -> list[str]:
    return [sys.executable, "-m", "facelab.cli", *args]


def sets(*items: str) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def all_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return client, client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_an_unreachable_store_refuses_the_run_before_any_work(workdir):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cache = workdir / "cache"
    started = time.monotonic()
    done = subprocess.run(facelab("run", str(QUICKSTART), *sets(
        f"tracking.uri={uri}", f"data.cache_dir={cache}", *TINY)), env=ENV,
        capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and uri in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not Path("runs").exists() and not cache.exists()  # no data preparation, no run
    assert seconds < 60, seconds  # process start + TensorFlow import + a refused connection


def test_a_server_dying_mid_run_costs_no_training_and_sync_uploads_the_rest(workdir,
                                                                           shared_cache):
    folder = workdir / "store"
    folder.mkdir()
    server, url = start_server(folder)
    run = None
    try:
        run = subprocess.Popen(facelab("run", str(QUICKSTART), *sets(
            f"tracking.uri={url}", f"data.cache_dir={shared_cache}", *TINY[:3],
            "train.epochs=12", "evaluate.timing_batches=1")), env=ENV,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and run.poll() is None:
            if list(Path("runs").glob("quickstart-*/checkpoints/last.json")):
                break  # epoch 1 is logged
            time.sleep(0.2)
        assert run.poll() is None, run.stdout.read()
        stop_server(server, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = run.communicate(timeout=240)
        after_kill = time.monotonic() - killed
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        stop_server(server)
    assert run.returncode == 0, output
    assert after_kill < 180, after_kill
    assert "Traceback" not in output, output
    offline = [line for line in output.splitlines() if "tracking offline" in line]
    assert len(offline) == 1, output
    (out,) = Path("runs").glob("quickstart-*")
    assert (out / "metrics.json").is_file() and list((out / "figures").glob("*.png"))
    assert json.loads((out / "run.json").read_text())["status"] == "FINISHED"
    pending = out / "mlflow_pending"
    state = json.loads((pending / "pending.json").read_text())
    assert state["status"] == "FINISHED" and state["mlflow_run_id"]
    assert (pending / "final_metrics.json").is_file()

    server, url = start_server(folder)  # the same store, again
    try:
        done = subprocess.run(facelab("sync", str(out), "--tracking-uri", url), env=ENV,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "FINISHED" in done.stdout
        client, runs = all_runs(url)
        (tracked,) = runs
        assert tracked.info.run_id == state["mlflow_run_id"]
        assert tracked.info.status == "FINISHED"
        assert any(k.startswith("test/") for k in tracked.data.metrics), tracked.data.metrics
        history = client.get_metric_history(tracked.info.run_id, "epoch/train/loss")
        assert sorted(m.step for m in history) == list(range(1, 13))
        reports = {a.path for a in client.list_artifacts(tracked.info.run_id, "reports")}
        assert "reports/metrics.json" in reports
        assert not pending.exists()
    finally:
        stop_server(server)


def test_two_runs_share_a_cold_cache_and_a_fresh_sqlite_store(workdir):
    uri = f"sqlite:///{workdir / 'fresh' / 'mlflow.db'}"
    (workdir / "fresh").mkdir()
    args = facelab("run", str(QUICKSTART), *sets(
        f"tracking.uri={uri}", f"data.cache_dir={workdir / 'cold-cache'}", *TINY,
        "tracking.log_model=false", "tracking.system_metrics=false"))
    runs = [subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for _ in range(2)]
    try:
        outputs = [run.communicate(timeout=300)[0] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output
    _, found = all_runs(uri)
    assert len(found) == 2 and {r.info.status for r in found} == {"FINISHED"}


def _processes() -> list[tuple[int, list[str]]]:
    """(pid, fields of /proc/<pid>/stat after the command name) of every live process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name),
                              (entry / "stat").read_text().rsplit(")", 1)[1].split()))
            except OSError:
                continue
    return found


def _group(pgid: int) -> list[int]:
    """Live (not zombie) members of process group ``pgid``."""
    return [pid for pid, fields in _processes() if int(fields[2]) == pgid and fields[0] != "Z"]


def _children(pid: int) -> list[int]:
    return [child for child, fields in _processes() if int(fields[1]) == pid]


def test_the_ui_server_dies_with_a_sigkilled_facelab_ui(workdir):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store exists
    port = free_port()
    ui = subprocess.Popen(facelab("ui", "--port", str(port), "--tracking-uri", uri), env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          start_new_session=True)
    group = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert ui.poll() is None, ui.stdout.read()
                time.sleep(0.5)
        (group,) = _children(ui.pid)  # the watchdog leads the server's process group
        assert len(_group(group)) >= 2
        ui.kill()  # SIGKILL: no handler, no finally
        ui.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _group(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group(group), "the MLflow server outlived `facelab ui`"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            raise AssertionError("the port still answers")
        except OSError:
            pass
    finally:
        if ui.poll() is None:
            ui.kill()
        if group is not None and _group(group):
            os.killpg(group, signal.SIGKILL)


def test_a_sweep_goes_on_when_its_parent_cannot_log(tmp_path, monkeypatch, capsys):
    """A tracking failure in the sweep's parent run (here: its summary) is one warning line;
    the sweep finishes and returns every child's result."""
    from types import SimpleNamespace

    from facelab.plugins.mlflow import study as studies
    from facelab.plugins.mlflow import sweep as sweeps

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def store_down(*args):
        raise ConnectionError("the tracking server went away")

    monkeypatch.setattr(studies, "_log_summary", store_down)
    names = []

    def run(recipe, name, tags, callbacks):
        names.append(name)
        return SimpleNamespace(references={}, final_metrics=lambda: {"test/race/accuracy": 0.5})

    result = studies.run_study(sweeps.sweep_from_grid(
        [QUICKSTART], ["model.attention.type=none,se"], [f"data.cache_dir={tmp_path / 'cache'}"]),
        run=run)
    assert names == ["quickstart[attention=none]", "quickstart[attention=se]"]
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    warning = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warning) == 1 and "offline for the sweep's parent run" in warning[0], warning
