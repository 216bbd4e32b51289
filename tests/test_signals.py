"""Bursts of Ctrl-C and SIGTERM on a real `facelab run`, during data preparation, training and
final reporting: the run ends KILLED (never RUNNING, never FINISHED without its artifacts),
the terminal shows one line, no traceback, and the exit code is 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import RECIPES

QUICKSTART = RECIPES / "quickstart.yaml"
TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=1", "evaluate.figures=false", "evaluate.timing_batches=1",
        "tracking.system_metrics=false"]
LINES = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


def store():
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{Path('mlflow.db').absolute()}")


def all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def burst(process: subprocess.Popen, signum: int, count: int = 5, gap: float = 0.05) -> None:
    for _ in range(count):
        if process.poll() is not None:
            return
        process.send_signal(signum)
        time.sleep(gap)


def start(workdir: Path, cache: Path, *more: str) -> tuple[subprocess.Popen, list[str]]:
    """A `facelab run` whose stdout lines are collected (as they come) into the list returned."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI="")
    args = [sys.executable, "-m", "facelab.cli", "run", str(QUICKSTART),
            *[x for item in (*TINY, f"data.cache_dir={cache}", *more) for x in ("--set", item)]]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                               stderr=open(workdir / "stderr.txt", "w"), text=True)
    lines: list[str] = []

    def read():
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def wait_for(process, condition, lines, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.02)


@pytest.mark.parametrize("phase", ["data", "training", "reporting"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_burst_of_signals_ends_the_run_killed_with_one_line(
        workdir, shared_cache, tmp_path, phase, signum):
    if phase == "data":  # a cold cache of many images: generating them takes a few seconds
        process, lines = start(workdir, tmp_path / "cold-cache", "data.dataset.count=4000",
                               "tracking.log_model=false")
        ready = lambda: any(line.startswith("loading ") for line in lines)  # noqa: E731
    elif phase == "training":
        process, lines = start(workdir, shared_cache, "train.epochs=200",
                               "tracking.log_model=false")
        ready = lambda: bool(list(Path("runs").glob("quickstart-*/model_summary.txt")))  # noqa
    else:  # metrics.json is written just before the observers report (figures, the model)
        # figures on: reporting lasts seconds, so the burst lands inside it, not after it
        process, lines = start(workdir, shared_cache, "evaluate.figures=true")
        ready = lambda: bool(list(Path("runs").glob("quickstart-*/metrics.json")))  # noqa: E731
    try:
        wait_for(process, ready, lines)
        burst(process, signum)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines)
    stderr = (workdir / "stderr.txt").read_text()
    assert process.returncode == CODES[signum], output + stderr
    assert "Traceback" not in stderr + output, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == [LINES[signum]], stderr
    folders = list(Path("runs").glob("quickstart-*"))
    if phase == "data":  # stopped before any run existed
        assert not folders
        assert not Path("mlflow.db").exists() or not all_runs(store())
        return
    import json

    (folder,) = folders
    assert json.loads((folder / "run.json").read_text())["status"] == "KILLED"
    (run,) = all_runs(store())
    assert run.info.status == "KILLED", output
    assert run.data.tags["facelab.error"] == LINES[signum]
    paths = {a.path for a in store().list_artifacts(run.info.run_id, "recipe")}
    assert "recipe/recipe.yaml" in paths  # the partial outputs were logged
