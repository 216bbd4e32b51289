"""Training and inference speed of recipes' models, side by side, as ratios to the first.

The race paper's Table 3 compares its base model with models 1 and 2 by training time and
frames per second. This builds each recipe's model exactly as ``facelab run`` does (weights
null, random inputs, so no data is needed) and times, in one process and interleaved rounds so a
noisy machine affects every model alike:

* training: ``train_on_batch`` images per second;
* inference: ``predict_on_batch`` images per second and ms per image.

    python benchmarks/model_speed.py                       # the three race-paper models, 64x64
    python benchmarks/model_speed.py --size 224 --batch 32 --rounds 5
    python benchmarks/model_speed.py recipes/multitask-2023/config-a-smile.yaml \\
        recipes/multitask-2023/config-b.yaml recipes/multitask-2023/config-c.yaml --size 48
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RACE = [REPO / "recipes" / "race-2025" / f"{name}.yaml" for name in ("base", "bd", "bd-am")]


def build(recipe_path: Path, size: int):
    """The recipe's compiled model at ``size`` x ``size``, and its input shape."""
    from facelab.context import QuietProgress
    from facelab.pipeline import compile_model, make_context, recipe_tasks
    from facelab.recipe import load_recipe

    os.environ.setdefault("UTKFACE_DIR", "/unused")
    os.environ.setdefault("GENKI4K_DIR", "/unused")
    os.environ.setdefault("IMDB_WIKI_DIR", "/unused")
    recipe = load_recipe(recipe_path, ["model.backbone.weights=null"]
                         if "race-2025" in str(recipe_path) else [])
    ctx = make_context(recipe, QuietProgress())
    tasks = recipe_tasks(recipe, ctx)
    shape = (size, size, recipe.detector.build(ctx).output_shape[2])
    return recipe.name, compile_model(recipe, shape, tasks), shape, tasks


def time_calls(fn, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", type=Path, default=RACE)
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=5, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best is kept")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from facelab.evaluate import device_name

    rng = np.random.default_rng(0)
    models = []
    for path in args.recipes:
        name, model, shape, tasks = build(path, args.size)
        x = rng.uniform(0, 255, (args.batch, *shape)).astype(np.float32)
        y = {t: rng.integers(0, task.num_classes, args.batch) for t, task in tasks.items()}
        model.train_on_batch(x, y)  # build the training graph before timing
        model.predict_on_batch(x)
        models.append((name, model, x, y, {"train": [], "infer": []}))
    for _ in range(args.rounds):  # interleaved, so load on the machine hits every model alike
        for name, model, x, y, times in models:
            times["train"].append(time_calls(lambda: model.train_on_batch(x, y), args.batches))
            times["infer"].append(time_calls(lambda: model.predict_on_batch(x), args.batches))

    images = args.batch * args.batches
    print(f"device: {device_name()}; input {args.size}x{args.size}, batch {args.batch}, "
          f"best of {args.rounds} rounds of {args.batches} batches")
    print(f"{'model':<28}{'params':>12}{'train img/s':>13}{'ratio':>7}"
          f"{'infer img/s':>13}{'ms/img':>8}{'ratio':>7}")
    base_train = base_infer = None
    for name, model, _, _, times in models:
        train = images / min(times["train"])
        infer = images / min(times["infer"])
        base_train, base_infer = base_train or train, base_infer or infer
        print(f"{name:<28}{model.count_params():>12,}{train:>13.1f}{train / base_train:>7.2f}"
              f"{infer:>13.1f}{1000 / infer:>8.2f}{infer / base_infer:>7.2f}")


if __name__ == "__main__":
    main()
