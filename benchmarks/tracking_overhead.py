"""What MLflow tracking costs a run: the quickstart's whole-process time with tracking on and
off, side by side, as a ratio.

Each round runs `facelab run recipes/quickstart.yaml` twice in fresh processes (tracking on,
then off; the order alternates between rounds so a noisy machine slows both alike), with the
same overrides and a warm data cache, each in its own empty working folder (so the sqlite store
is created anew, as on a first run). The table shows the median wall time of each and their
difference and ratio.

    python benchmarks/tracking_overhead.py                  # 3 rounds, 2 epochs
    python benchmarks/tracking_overhead.py --rounds 5 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")


def run_once(folder: Path, cache: Path, epochs: int, tracking: bool) -> float:
    folder.mkdir(parents=True)
    args = [sys.executable, "-m", "facelab.cli", "run", QUICKSTART,
            "--set", f"data.cache_dir={cache}", "--set", f"train.epochs={epochs}",
            "--set", f"tracking.enabled={'true' if tracking else 'false'}"]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                         f"{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    options = parser.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="facelab-tracking-") as tmp:
        root = Path(tmp)
        run_once(root / "warm-up", root / "cache", 1, False)  # generate data, fill the cache
        for i in range(options.rounds):
            for tracking in ((True, False) if i % 2 == 0 else (False, True)):
                name = f"{'on' if tracking else 'off'}-{i}"
                times[tracking].append(run_once(root / name, root / "cache", options.epochs,
                                                tracking))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"machine: {os.cpu_count()} cores; quickstart, {options.epochs} epochs; "
          f"{options.rounds} rounds; median whole-process seconds")
    print(f"tracking on   {on:7.1f} s   (all: {', '.join(f'{t:.1f}' for t in times[True])})")
    print(f"tracking off  {off:7.1f} s   (all: {', '.join(f'{t:.1f}' for t in times[False])})")
    print(f"difference    {on - off:7.1f} s   ratio {on / off:.2f}")


if __name__ == "__main__":
    main()
