"""Resuming a stopped run (``facelab run --resume``): a real process killed by SIGKILL in epoch 3
of 5 is continued in its output folder and its MLflow run, and ends as an uninterrupted run
does; changed recipes and finished runs are refused; checkpoints keep last and best only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import RECIPES
from facelab import checkpoints
from facelab.cli import cli
from facelab.errors import FacelabError

QUICKSTART = RECIPES / "quickstart.yaml"
#: 400 images make epochs of about half a second here: long enough to kill inside epoch 3.
TINY = ["data.dataset.count=400", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=5", "evaluate.figures=false", "evaluate.timing_batches=1",
        "tracking.log_model=false", "tracking.system_metrics=false"]
EPOCH_METRICS = ("epoch/train/loss", "epoch/val/loss", "epoch/train/race/accuracy",
                 "epoch/val/race/accuracy", "epoch/learning_rate")


def sets(cache, *more) -> list[str]:
    return [x for item in (*TINY, f"data.cache_dir={cache}", *more) for x in ("--set", item)]


def store():
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{Path('mlflow.db').absolute()}")


def all_runs(client):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def facelab(*args: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI="")
    return subprocess.Popen([sys.executable, "-m", "facelab.cli", *args], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def checkpoint_epoch(folder: Path) -> int:
    try:
        return json.loads((folder / "checkpoints" / "last.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_run_killed_in_epoch_3_resumes_to_the_uninterrupted_result(
        workdir, shared_cache, cli_runner):
    """Without augmentation, so that the uninterrupted run is deterministic: with the
    quickstart's random flip, two uninterrupted runs already differ (its seed generator runs in
    a parallel tf.data map, where the order of its draws varies), and a resumed run differs from
    one as much as they differ from each other."""
    # 1. a real `facelab run`, killed by SIGKILL as soon as epoch 2's checkpoint exists
    process = facelab("run", str(QUICKSTART), *sets(shared_cache, "data.augment=[]"),
                      log=workdir / "killed.log")
    try:
        deadline, folder, killed_after = time.monotonic() + 240, None, 0
        while time.monotonic() < deadline and process.poll() is None:
            folder = folder or next(iter(Path("runs").glob("quickstart-*")), None)
            if folder is not None and checkpoint_epoch(folder) >= 2:
                process.send_signal(signal.SIGKILL)
                killed_after = checkpoint_epoch(folder)
                break
            time.sleep(0.01)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    log = (workdir / "killed.log").read_text()
    assert process.returncode == -signal.SIGKILL, log
    assert killed_after == 2, log  # killed in epoch 3
    run_file = json.loads((folder / "run.json").read_text())
    assert run_file["status"] == "RUNNING"  # nothing could record the kill
    (killed,) = all_runs(store())
    assert killed.info.status == "RUNNING"
    assert killed.data.tags["facelab.output_dir"] == str(folder.absolute())

    # 2. --resume with a changed recipe is refused, naming what differs
    result = cli_runner.invoke(cli, ["run", str(QUICKSTART), "--resume", str(folder),
                                     *sets(shared_cache, "data.augment=[]",
                                           "train.epochs=6")])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "train.epochs (5 -> 6)" in result.output

    # 3. resumed by facelab's run id, in a new process
    process = facelab("run", "--resume", run_file["id"], log=workdir / "resumed.log")
    process.wait(timeout=300)
    log = (workdir / "resumed.log").read_text()
    assert process.returncode == 0, log
    assert "after epoch 2 of 5" in log and "epoch 3/5" in log and "epoch 1/5" not in log, log
    client = store()
    (run,) = all_runs(client)  # the same MLflow run, FINISHED
    assert run.info.run_id == killed.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["facelab.resumed_from_epoch"] == "2"
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == [1, 2, 3, 4, 5], (key, steps)
    assert list(Path("runs").iterdir()) == [folder]  # the same output folder
    history = json.loads((folder / "history.json").read_text())
    assert {len(v) for v in history.values()} == {5}
    assert json.loads((folder / "run.json").read_text())["status"] == "FINISHED"
    assert "test/race/accuracy" in run.data.metrics

    # 4. a finished run is refused (here by its MLflow run id, found through the plugin)
    result = cli_runner.invoke(cli, ["run", "--resume", run.info.run_id])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "already finished" in result.output

    # 5. the uninterrupted run, same recipe and seed, in this process
    from facelab.recipe import load_recipe
    from facelab.runner import run_recipe

    reference = run_recipe(load_recipe(QUICKSTART, [
        *TINY, f"data.cache_dir={shared_cache}", "data.augment=[]", "tracking.enabled=false",
        "output_dir=uninterrupted"]))
    resumed = json.loads((folder / "metrics.json").read_text())
    accuracy = resumed["test"]["race"]["accuracy"]
    reference_accuracy = reference.metrics["test"]["race"].accuracy
    loss_gap = max(abs(a - b) for a, b in zip(history["val_loss"],
                                                 reference.history["val_loss"]))
    print(f"\nresumed vs uninterrupted: test accuracy {accuracy:.4f} vs "
          f"{reference_accuracy:.4f}; largest val_loss gap per epoch {loss_gap:.2e}")
    # restored weights, optimizer state, shuffling order and dropout's random state: epochs
    # 3-5 and the final metrics are those of the uninterrupted run
    for key, values in history.items():
        assert values == pytest.approx(reference.history[key], abs=1e-5), key
    assert accuracy == pytest.approx(reference_accuracy, abs=1e-9)


def test_checkpoints_keep_last_and_best_only_or_none(workdir, shared_cache):
    from facelab.recipe import load_recipe
    from facelab.runner import run_recipe

    base = [*TINY, f"data.cache_dir={shared_cache}", "tracking.enabled=false",
            "data.dataset.count=200"]
    result = run_recipe(load_recipe(QUICKSTART, [*base, "train.epochs=3"]))
    kept = result.output_dir / "checkpoints"
    assert sorted(p.name for p in kept.iterdir()) == ["best.json", "best.keras", "last.json",
                                                      "last.keras"]
    losses = result.history["val_loss"]
    last, best = checkpoints.load(result.output_dir), checkpoints.load_best(result.output_dir)
    assert last.epoch == 3 and last.history == result.history
    assert best.epoch == losses.index(min(losses)) + 1 == last.best_epoch
    assert json.loads((result.output_dir / "run.json").read_text())["status"] == "FINISHED"

    result = run_recipe(load_recipe(QUICKSTART, [*base, "train.epochs=1",
                                                 "train.checkpoints=false"]))
    assert not (result.output_dir / "checkpoints").exists()
    assert (result.output_dir / "run.json").is_file()


def test_a_half_written_checkpoint_falls_back_to_best(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name, epoch in (("best", 1), ("last", 2)):
        (folder / f"{name}.keras").write_bytes(f"model {epoch}".encode())
        state = {"epoch": epoch, "history": {"loss": [1.0] * epoch}, "train_seconds": 1.0,
                 "random": {}, "model": f"{name}.keras",
                 "model_sha256": checkpoints._sha256(folder / f"{name}.keras")}
        (folder / f"{name}.json").write_text(json.dumps(state))
    assert checkpoints.load(tmp_path).epoch == 2
    (folder / "last.keras").write_bytes(b"model 3")  # killed before last.json was replaced
    assert checkpoints.load(tmp_path).epoch == 1


def test_resume_refusals_are_one_line(workdir, cli_runner, tmp_path):
    (tmp_path / "not-a-run").mkdir()
    for args, expected in ((["run", "--resume", "not-a-run"], "has no run.json"),
                           (["run", "--resume", "0123abcd"], "no run '0123abcd'"),
                           (["run"], "missing RECIPE")):
        result = cli_runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and expected in result.output, result.output
    assert not Path("mlflow.db").exists()  # looking a run up creates no store
    with checkpoints.hold(tmp_path):  # a run another process still runs
        with pytest.raises(FacelabError, match="still running"):
            with checkpoints.hold(tmp_path):
                pass
