"""What MLflow tracking costs a run: the quickstart's whole-process time with tracking on and
off, side by side, as a ratio.

Each round runs `facelab run recipes/quickstart.yaml` twice in fresh processes (tracking on,
then off; the order alternates between rounds so a noisy machine slows both alike), with the
same overrides and a warm data cache. By default all runs share one working folder whose sqlite
store already exists (the usual case); `--fresh-store` gives every run an empty folder, so the
store is created on each tracked run (a first run). The table shows the median wall time of
each and their difference and ratio.

    python benchmarks/tracking_overhead.py                  # 3 rounds, 2 epochs
    python benchmarks/tracking_overhead.py --rounds 5 --epochs 4 --fresh-store
    PYTHONPATH=/path/to/other/facelab python benchmarks/tracking_overhead.py \
        --recipe /path/to/other/recipes/quickstart.yaml      # another version of facelab
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


def run_once(folder: Path, cache: Path, epochs: int, tracking: bool, recipe: str) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "facelab.cli", "run", recipe,
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
    parser.add_argument("--fresh-store", action="store_true",
                        help="an empty working folder (a new sqlite store) for every run")
    parser.add_argument("--recipe", default=QUICKSTART)
    options = parser.parse_args()
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="facelab-tracking-") as tmp:
        root = Path(tmp)
        # generate the data and fill the crop cache; with a shared folder, create the store
        run_once(root / "shared", root / "cache", 1, not options.fresh_store, options.recipe)
        for i in range(options.rounds):
            for tracking in ((True, False) if i % 2 == 0 else (False, True)):
                folder = root / (f"{'on' if tracking else 'off'}-{i}" if options.fresh_store
                                 else "shared")
                times[tracking].append(run_once(folder, root / "cache", options.epochs,
                                                tracking, options.recipe))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    store = "a new sqlite store per run" if options.fresh_store else "an existing sqlite store"
    print(f"machine: {os.cpu_count()} cores; quickstart, {options.epochs} epochs; "
          f"{options.rounds} rounds; {store}; median whole-process seconds")
    print(f"tracking on   {on:7.1f} s   (all: {', '.join(f'{t:.1f}' for t in times[True])})")
    print(f"tracking off  {off:7.1f} s   (all: {', '.join(f'{t:.1f}' for t in times[False])})")
    print(f"difference    {on - off:7.1f} s   ratio {on / off:.2f}")


if __name__ == "__main__":
    main()
