"""Sweeps on Optuna: two worker processes share one grid (each point once), a killed worker's
trial is retried by a live one, a TPE search over a log-scaled learning rate, a pruned trial,
and the sweep file's one-line errors."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import RECIPES
from facelab.cli import cli
from facelab.errors import FacelabError

QUICKSTART = RECIPES / "quickstart.yaml"
TINY = ["data.dataset.count=80", "data.dataset.size=16", "data.detector.size=[16,16]",
        "model.backbone.filters=[8,16]", "train.epochs=1", "train.batch_size=16",
        "train.checkpoints=false", "evaluate.batch_size=32", "evaluate.figures=false",
        "evaluate.timing_batches=1", "evaluate.groups=[]", "evaluate.examples=0",
        "tracking.log_model=false", "tracking.system_metrics=false"]


def write_sweep(folder: Path, cache: Path, name: str = "tiny", **fields) -> Path:
    """A sweep file over the tiny quickstart in ``folder``."""
    spec = {"kind": "sweep", "recipe": str(QUICKSTART),
            "set": [*TINY, f"data.cache_dir={cache}"], **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def worker(sweep: Path, *args: str) -> subprocess.Popen:
    """``facelab sweep SWEEP`` in its own process group (so SIGKILL takes all of it)."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "facelab.cli", "sweep", str(sweep), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return output


def study_trials(name: str, folder: Path):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}"
                             ).get_trials(deepcopy=False)


def mlflow_runs(folder: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("facelab.sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("facelab.sweep_role") == "child"]
    return client, parents, children


def query(db: Path, sql: str) -> list[tuple]:
    """Read a store another process writes (sqlite3 directly: opening it with Optuna or MLflow
    would race the worker's schema creation); [] while the table does not exist yet."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
            return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def test_two_workers_share_a_grid_each_point_once(workdir, shared_cache):
    """Two `facelab sweep` processes on one storage: the 6-point grid runs once, no point twice
    and none missing, both workers run trials, under one parent run."""
    sweep = write_sweep(workdir, shared_cache, study="shared", space={
        "seed": {"choices": [1, 2, 3]}, "model.attention.type": {"choices": ["none", "se"]}})
    processes = [worker(sweep), worker(sweep)]
    outputs = [finish(p) for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    trials = study_trials("shared", workdir)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    points = sorted((t.params["seed"], t.params["model.attention.type"]) for t in trials)
    assert points == sorted(itertools.product(["1", "2", "3"], ["none", "se"]))
    # both workers ran trials, none ran one twice (each announces its trials)
    ran = [{int(n) for n in __import__("re").findall(r"trial (\d+) of 6", out)}
           for out in outputs]
    assert all(ran) and not ran[0] & ran[1] and ran[0] | ran[1] == set(range(6)), ran
    _, parents, children = mlflow_runs(workdir)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] == 6
    assert len(children) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["facelab.optuna.trial"] for c in children} == {str(n) for n in range(6)}
    assert all(c.info.status == "FINISHED" and c.data.tags["facelab.optuna.state"] == "COMPLETE"
               for c in children)
    assert "quickstart[seed=2,attention=se]" in {c.info.run_name for c in children}
    assert parent.data.tags["facelab.optuna.best_run"] in {c.info.run_id for c in children}


def test_a_killed_workers_trial_is_retried(workdir, shared_cache):
    """SIGKILL a worker mid-trial; a second worker with a short heartbeat grace fails that
    trial, runs it again and completes the study: every grid point COMPLETE exactly once."""
    sweep = write_sweep(workdir, shared_cache, study="killed", space={
        "seed": {"choices": [1, 2]}}, heartbeat={"interval": 1, "grace": 4})
    first = worker(sweep)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            # its trial is RUNNING in Optuna and its MLflow run has started (parent + child)
            if query(workdir / "optuna.db", "select 1 from trials where state = 'RUNNING'") \
                    and len(query(workdir / "mlflow.db",
                                  "select 1 from runs where status = 'RUNNING'")) >= 2:
                break
            time.sleep(0.5)
        assert first.poll() is None, first.stdout.read()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    second = worker(sweep)
    output = finish(second)
    assert second.returncode == 0, output
    trials = study_trials("killed", workdir)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["seed"] for t in complete) == ["1", "2"], output
    (lost,) = [t for t in trials if t.state.name == "FAIL"]
    (retry,) = [t for t in complete if t.system_attrs.get("failed_trial") == lost.number]
    assert retry.params == lost.params
    assert len(trials) == 3
    _, parents, children = mlflow_runs(workdir)
    assert [p.info.status for p in parents] == ["FINISHED"]
    killed = [c for c in children if c.info.status == "KILLED"]
    assert len(killed) == 1 and killed[0].data.tags["facelab.optuna.trial"] == str(lost.number)
    assert "worker lost" in killed[0].data.tags["facelab.error"]
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED", "KILLED"]


def test_tpe_over_a_log_scaled_learning_rate(workdir, shared_cache):
    from optuna.distributions import FloatDistribution

    from facelab.plugins.mlflow import study as studies
    from facelab.plugins.mlflow import sweep as sweeps

    key = "train.schedule.initial_learning_rate"
    path = write_sweep(workdir, shared_cache, name="lr", sampler="tpe", trials=4, seed=7,
                       space={key: {"low": 1e-4, "high": 1e-1, "log": True}},
                       objective={"metric": "test/race/accuracy", "direction": "maximize"})
    result = studies.run_study(sweeps.load_sweep_file(path))
    trials = study_trials(result.study, workdir)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    rates = [t.params[key] for t in trials]
    assert len(set(rates)) == 4 and all(1e-4 <= r <= 1e-1 for r in rates), rates
    assert trials[0].distributions[key] == FloatDistribution(1e-4, 1e-1, log=True)
    client, (parent,), children = mlflow_runs(workdir)
    by_trial = {int(c.data.tags["facelab.optuna.trial"]): c for c in children}
    for t in trials:  # each child ran with its trial's rate and returned its test accuracy
        child = by_trial[t.number]
        assert float(child.data.params[key]) == pytest.approx(t.params[key])
        assert t.value == pytest.approx(child.data.metrics["test/race/accuracy"])
    best = max(trials, key=lambda t: t.value)
    assert result.best.number == best.number
    assert parent.data.tags["facelab.optuna.best_trial"] == str(best.number)
    assert parent.data.params["sweep.sampler"] == "tpe"


def test_a_pruner_stops_a_hopeless_trial(workdir, shared_cache):
    """A learning rate of 1e6 sends the validation loss far past the threshold after epoch 1:
    the trial is PRUNED there (epoch 2 never runs) and its run ends KILLED (MLflow and
    run.json), tagged."""
    from facelab.plugins.mlflow import study as studies
    from facelab.plugins.mlflow import sweep as sweeps

    path = write_sweep(workdir, shared_cache, name="hopeless", space={
        "train.schedule.initial_learning_rate": {"choices": [1.0e6]}},
        pruner={"type": "threshold", "upper": 50.0, "metric": "epoch/val/loss",
                "warmup_epochs": 0})
    sweep = sweeps.load_sweep_file(path, ["train.epochs=2"])
    result = studies.run_study(sweep)
    (trial,) = study_trials(result.study, workdir)
    assert trial.state.name == "PRUNED"
    assert list(trial.intermediate_values) == [1]
    client, (parent,), (child,) = mlflow_runs(workdir)
    assert child.info.status == "KILLED"
    run_file = Path(child.data.tags["facelab.output_dir"]) / "run.json"
    assert json.loads(run_file.read_text())["status"] == "KILLED"  # as in MLflow
    assert child.data.tags["facelab.optuna.state"] == "PRUNED"
    assert child.data.tags["facelab.error"].startswith("pruned after epoch 1")
    assert [m.step for m in client.get_metric_history(child.info.run_id, "epoch/val/loss")] == [1]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_pruned"] == 1


def test_sweep_file_errors_are_one_line(workdir, cli_runner, monkeypatch):
    def run(path_or_args):
        args = path_or_args if isinstance(path_or_args, list) else [str(path_or_args)]
        return cli_runner.invoke(cli, ["sweep", *args, "--dry-run"])

    cases = [
        ({"space": {"model.attention.type": {"choice": ["none"]}}},
         "space.model.attention.type.choice: unknown key 'choice'; did you mean 'choices'"),
        ({"space": {"train.epochs": {"low": 3, "high": 1}}}, "low (3) must be below high (1)"),
        ({"space": {"train.epochs": {"low": 0.0, "high": 1.0, "log": True}}}, "log: true needs"),
        ({"sampler": "bayes"}, "sampler"),
        ({"sampler": "random"}, "trials: expected the number of trials"),
        ({"trials": 3}, "but the grid has 2 points"),
        ({"space": {"train.schedule.initial_learning_rate": {"low": 0.1, "high": 0.2}}},
         "the grid sampler needs choices"),
        ({"objective": {"metric": "test/gender/accuracy"}}, "unknown task 'gender'"),
        ({"pruner": {"type": "median", "metric": "epoch/val/loss"}}, "improves the other way"),
        ({"recipe": "nope.yaml"}, "recipe: nope.yaml is not a file"),
        ({"space": {"model.attention.type": {"choices": ["none", "cbm"]}}}, "did you mean 'cbam'"),
    ]
    for fields, expected in cases:
        spec = {"kind": "sweep", "recipe": str(QUICKSTART),
                "space": {"model.attention.type": {"choices": ["none", "se"]}}, **fields}
        path = workdir / "bad.yaml"
        path.write_text(yaml.safe_dump(spec))
        result = run(path)
        assert result.exit_code == 2, (fields, result.output)
        assert expected in result.output and result.output.count("\n") == 1, result.output
        assert str(path) in result.output or "point" in result.output, result.output
    result = run([str(QUICKSTART), "--grid", "model.attention.type=none,se", "--shard", "1/2"])
    assert result.exit_code == 2 and "same --storage" in result.output, result.output
    result = run([str(QUICKSTART), "--grid", "model.attention.type=none,se", "--grace", "5",
                  "--heartbeat", "10"])
    assert result.exit_code == 2 and "grace (5 s) must exceed interval" in result.output
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    result = run([str(QUICKSTART), "--grid", "model.attention.type=none,se"])
    assert result.exit_code == 2 and "pip install 'facelab[sweep]'" in result.output
    assert not Path("mlflow.db").exists() and not Path("optuna.db").exists()


def test_the_sweep_files_in_recipes_validate(workdir, cli_runner, monkeypatch):
    for name in ("UTKFACE_DIR", "GENKI4K_DIR", "IMDB_WIKI_DIR"):
        monkeypatch.setenv(name, str(workdir / name.lower()))
    files = sorted((RECIPES / "sweeps").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        result = cli_runner.invoke(cli, ["sweep", str(path), "--dry-run"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert "all valid" in result.output
    assert not Path("optuna.db").exists()


def test_a_study_name_holds_one_sweep(workdir, shared_cache):
    """Joining a study with another sweep under its name is refused; the same sweep again
    finds it complete and runs nothing."""
    from facelab.plugins.mlflow import study as studies
    from facelab.plugins.mlflow import sweep as sweeps

    calls = []

    def run(recipe, name, tags, callbacks):
        calls.append(name)
        return SimpleNamespace(references={}, final_metrics=lambda: {"test/race/accuracy": 0.5})

    first = sweeps.sweep_from_grid([QUICKSTART], ["model.attention.type=none,se"],
                                   [f"data.cache_dir={shared_cache}"])
    first = sweeps.Sweep(**{**first.__dict__, "study": "one"})
    result = studies.run_study(first, run=run)
    assert calls == ["quickstart[attention=none]", "quickstart[attention=se]"]
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    again = studies.run_study(first, run=run)
    assert len(calls) == 2 and again.ran_here == [] and len(again.trials) == 2
    other = sweeps.Sweep(**{**first.__dict__, "space": {
        "model.attention.type": sweeps.Dimension(choices=["none", "cbam"])}})
    with pytest.raises(FacelabError, match="holds another sweep"):
        studies.run_study(other, run=run)
    # a joiner whose heartbeat interval exceeds the first worker's grace would see its live
    # trials failed and run twice: refused
    slow = sweeps.Sweep(**{**first.__dict__,
                           "heartbeat": sweeps.Heartbeat(interval=200, grace=400)})
    with pytest.raises(FacelabError, match="each grace must exceed every interval"):
        studies.run_study(slow, run=run)


def test_a_stopped_worker_puts_its_trial_back(workdir, shared_cache):
    """Ctrl-C in a trial: the trial fails and is enqueued again, the parent ends KILLED; the
    same sweep run again runs the stopped point and the one never started, then finishes."""
    from facelab.plugins.mlflow import study as studies
    from facelab.plugins.mlflow import sweep as sweeps

    sweep = sweeps.sweep_from_grid([QUICKSTART], ["model.attention.type=none,se"],
                                   [f"data.cache_dir={shared_cache}"])
    calls = []

    def interrupted(recipe, name, tags, callbacks):
        calls.append(name)
        raise KeyboardInterrupt

    def run(recipe, name, tags, callbacks):
        calls.append(name)
        return SimpleNamespace(references={}, final_metrics=lambda: {"test/race/accuracy": 0.5})

    with pytest.raises(KeyboardInterrupt):
        studies.run_study(sweep, run=interrupted)
    _, (parent,), _ = mlflow_runs(workdir)
    assert parent.info.status == "KILLED"
    states = [t.state.name for t in study_trials(sweep.study_name(), workdir)]
    assert states == ["FAIL", "WAITING", "WAITING"]  # the stopped point is back in the queue
    result = studies.run_study(sweep, run=run)
    assert calls == ["quickstart[attention=none]", "quickstart[attention=se]",
                     "quickstart[attention=none]"]
    assert sorted(t.state for t in result.trials) == ["COMPLETE", "COMPLETE", "FAIL"]
    assert not result.failed and result.trials[-1].retried_as == 2
    _, (parent,), _ = mlflow_runs(workdir)
    assert parent.info.status == "FINISHED"


def test_a_pruned_run_is_tagged_with_why_not_as_a_sigterm():
    """What the MLflow plugin writes as ``facelab.error`` when a run ends (also offline, where
    the sweep cannot tag it afterwards)."""
    from facelab.plugins.mlflow import describe
    from facelab.plugins.mlflow.pruning import TrialPruned

    reason = "pruned after epoch 3 (epoch/val/loss = 80.2)"
    assert describe("KILLED", TrialPruned(reason)) == reason
    assert describe("KILLED", KeyboardInterrupt()) == "interrupted (Ctrl-C)"
    assert describe("FAILED", ValueError("bad")) == "ValueError: bad"
