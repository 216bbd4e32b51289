"""Start-up time of `facelab` commands against `python -c "import tensorflow"`, as ratios.

Every command that builds no model must start without TensorFlow (tests/test_startup.py checks
the imports); this measures what that buys. Each command is a fresh process, run in interleaved
rounds so a noisy machine slows every command alike; the table shows the median wall time, the
peak memory (max RSS) and the ratio to the TensorFlow import measured in the same rounds.

    python benchmarks/startup.py               # 5 rounds, in a temporary folder with a store
    python benchmarks/startup.py --rounds 9
    PYTHONPATH=/path/to/other/facelab FACELAB_BENCH_RECIPE=/path/to/its/quickstart.yaml \
        python benchmarks/startup.py           # another version of facelab, for a before/after
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The recipe `show` and `validate` read; another facelab version may need its own copy.
QUICKSTART = os.environ.get("FACELAB_BENCH_RECIPE", str(REPO / "recipes" / "quickstart.yaml"))
BASELINE = "python -c 'import tensorflow'"


def commands(run_ids: list[str]) -> dict[str, list[str]]:
    facelab = [sys.executable, "-m", "facelab.cli"]
    return {
        BASELINE: [sys.executable, "-c", "import tensorflow"],
        "facelab --help": [*facelab, "--help"],
        "facelab --version": [*facelab, "--version"],
        "facelab plugins": [*facelab, "plugins"],
        "facelab show": [*facelab, "show", QUICKSTART],
        "facelab validate": [*facelab, "validate", QUICKSTART],
        "facelab runs": [*facelab, "runs"],
        "facelab compare": [*facelab, "compare", *run_ids],
        "facelab (usage error)": [*facelab, "nosuchcommand"],
    }


def make_store(folder: Path) -> list[str]:
    """An MLflow store with two runs, so `runs` and `compare` have something to read."""
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("startup")
    ids = []
    for accuracy in (0.5, 0.6):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "test/race/accuracy", accuracy)
        client.log_param(run.info.run_id, "model.attention.type", str(accuracy))
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory(prefix="facelab-startup-") as tmp:
        folder = Path(tmp)
        table = commands(make_store(folder))
        times: dict[str, list[float]] = {name: [] for name in table}
        memory: dict[str, float] = {}
        for _ in range(rounds):
            for name, args in table.items():
                # max RSS of children is cumulative: measure each command in its own child
                done = subprocess.run(
                    [sys.executable, "-c", _MEASURE, *args], cwd=folder, env=env,
                    capture_output=True, text=True, check=True)
                seconds, rss = map(float, done.stdout.split())
                times[name].append(seconds)
                memory[name] = max(memory.get(name, 0.0), rss)
    base = statistics.median(times[BASELINE])
    print(f"machine: {os.cpu_count()} cores; {rounds} rounds; median wall time per process")
    print(f"{'command':28} {'seconds':>8} {'ratio':>7} {'max RSS MB':>11}")
    for name in table:
        median = statistics.median(times[name])
        print(f"{name:28} {median:8.2f} {median / base:7.2f} {memory[name]:11.0f}")


#: Runs one command and prints its wall time and its max RSS (MB).
_MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
seconds = time.perf_counter() - start
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""

if __name__ == "__main__":
    main()
