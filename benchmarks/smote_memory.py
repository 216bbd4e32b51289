"""Peak memory of our SMOTE plan vs imblearn's SMOTE on uint8 face-sized images.

Each side runs in its own subprocess on the same random uint8 images, with the race paper's
training-set class counts (the 80% split of UTKFace's four races: 8062/3621/2747/3180 = 17,610,
balanced by SMOTE to 4 x 8062 = 32,248). We report the peak RSS above the process's RSS once the
uint8 images exist, the time, and a digest of the balanced float32 set, to show both give the same
samples. imblearn gets the images as float32 (on uint8 its arithmetic wraps around).

    python benchmarks/smote_memory.py --size 64              # full counts, 64x64x3
    python benchmarks/smote_memory.py --size 224 --only ours # paper scale, ours alone
    python benchmarks/smote_memory.py --size 128 --scale 0.25
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

#: The race paper's training split (80% of White, Black, Asian, Indian).
PAPER_TRAIN_COUNTS = (8062, 3621, 2747, 3180)
BATCH = 256


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def data(size: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    counts = [max(8, round(c * scale)) for c in PAPER_TRAIN_COUNTS]
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    rng = np.random.default_rng(seed + 1)
    for start in range(0, len(images), BATCH):  # filled in batches: no int64 temporaries
        images[start:start + BATCH] = rng.integers(0, 256, images[start:start + BATCH].shape,
                                                   dtype=np.uint8)
    return images, labels


def child(which: str, size: int, scale: float, seed: int, k: int) -> dict:
    # Import both sides first, so the baseline holds the libraries and the images, nothing else.
    from imblearn.over_sampling import SMOTE
    from sklearn.neighbors import NearestNeighbors  # noqa: F401

    from facelab.plugins.balancers.smote import Smote, SmoteParams

    images, labels = data(size, scale, seed)
    baseline = rss_mb()
    digest = hashlib.sha256()
    start = time.perf_counter()
    if which == "ours":
        plan = Smote(SmoteParams(k_neighbors=k)).plan(images, labels, seed)
        planned = time.perf_counter() - start
        flat = images.reshape(len(images), -1)
        for rows in range(0, len(plan), BATCH):  # what the input pipeline does, batch by batch
            part = slice(rows, rows + BATCH)
            base = flat[plan.base[part]].astype(np.float32)
            diff = flat[plan.neighbour[part]].astype(np.float32) - base
            # imblearn's arithmetic: float32 difference, float64 step, rounded to float32
            batch = (base + plan.step[part][:, None] * diff).astype(np.float32)
            digest.update(batch.tobytes())
        n_out, y_digest = len(plan), hashlib.sha256(labels[plan.base].tobytes()).hexdigest()[:16]
    else:
        x = images.reshape(len(images), -1).astype(np.float32)
        del images
        out, y_out = SMOTE(k_neighbors=k, random_state=seed).fit_resample(x, labels)
        planned = time.perf_counter() - start
        for rows in range(0, len(out), BATCH):
            digest.update(out[rows:rows + BATCH].tobytes())
        n_out, y_digest = len(out), hashlib.sha256(y_out.tobytes()).hexdigest()[:16]
    return {"which": which, "images_mb": round(len(labels) * size * size * 3 / 2 ** 20, 1),
            "samples_in": len(labels), "samples_out": n_out,
            "peak_above_images_mb": round(peak_mb() - baseline, 1),
            "seconds": round(time.perf_counter() - start, 1), "resample_seconds": round(planned, 1),
            "x_digest": digest.hexdigest()[:16], "y_digest": y_digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the paper's counts")
    parser.add_argument("--k", type=int, default=5, help="SMOTE k_neighbors")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", choices=("ours", "imblearn"), help="run one side only")
    parser.add_argument("--child", choices=("ours", "imblearn"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.scale, args.seed, args.k)))
        return
    results = {}
    for which in ([args.only] if args.only else ["ours", "imblearn"]):
        command = [sys.executable, __file__, "--child", which, "--size", str(args.size),
                   "--scale", str(args.scale), "--k", str(args.k), "--seed", str(args.seed)]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            print(f"{which}: failed (exit {done.returncode}; a memory kill reads -9)\n"
                  f"{done.stderr[-2000:]}")
            continue
        results[which] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(results[which]))
    if len(results) == 2:
        ours, theirs = results["ours"], results["imblearn"]
        same = ours["x_digest"] == theirs["x_digest"] and ours["y_digest"] == theirs["y_digest"]
        ratio = theirs["peak_above_images_mb"] / max(ours["peak_above_images_mb"], 1e-9)
        print(f"{args.size}x{args.size}x3, {ours['samples_in']} -> {ours['samples_out']} samples: "
              f"peak above the uint8 images: ours {ours['peak_above_images_mb']:.0f} MB, imblearn "
              f"{theirs['peak_above_images_mb']:.0f} MB (x{ratio:.1f}); identical samples: {same}")


if __name__ == "__main__":
    main()
