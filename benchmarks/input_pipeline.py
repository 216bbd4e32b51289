"""facelab's tf.data input pipeline against a plain one, as images/s and training-epoch ratios.

The plain pipeline is what a Keras user writes for a uint8 array that fits in memory:
``from_tensor_slices((images, labels)).map(cast).batch(b).prefetch()``, augmentation (when on)
as a parallel map of Keras layers after ``batch``, as in the Keras guides. facelab's is
``facelab.inputs.make_dataset`` as ``facelab run`` builds it: shuffled per epoch, for an identity
plan (no balancing) and a SMOTE plan of the same images (imbalanced labels, about half the rows
synthesised), augmentation in its sequential map. Both get the same flip + rotation layers.

In one process and interleaved rounds (so a noisy machine slows every pipeline alike), medians:

* reading: one epoch's batches consumed without a model, images/s at each size, with and
  without augmentation;
* training: one ``fit`` epoch of the same compiled model fed by either pipeline (models built by
  facelab from the quickstart, multitask-2023 config B (BKNet) and race-2025 with EfficientNet-B0,
  ``weights: null``), seconds per image of facelab's over the plain pipeline's.

    python benchmarks/input_pipeline.py                 # 64, 128, 224 px; then the 3 models
    python benchmarks/input_pipeline.py --quick         # fewer images and rounds
    python benchmarks/input_pipeline.py --sizes 224 --rounds 7 --no-training --augment off
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
#: (label, recipe, overrides): the models timed in training, each at its recipe's input size.
MODELS = [
    ("quickstart (simple-cnn)", REPO / "recipes" / "quickstart.yaml", []),
    ("multitask-2023 B (BKNet)", REPO / "recipes" / "multitask-2023" / "config-b.yaml", []),
    ("EfficientNet-B0", REPO / "recipes" / "race-2025" / "base.yaml",
     ["model.backbone.variant=b0", "model.backbone.weights=null",
      "data.detector.size=[64,64]"]),
]
#: Images read per size: about 50-120 MB of uint8 each, a few seconds an epoch here.
READ_COUNTS = {64: 4000, 128: 2000, 224: 800}
#: Labels with the race paper's imbalance (UTKFace's 4 races), so SMOTE synthesises ~45% of rows.
CLASS_SHARES = (0.46, 0.21, 0.16, 0.17)


def random_data(count: int, shape: tuple[int, ...], tasks: dict[str, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
    labels = {task: (rng.choice(4, count, p=CLASS_SHARES) if classes == 4
                     else rng.integers(0, classes, count)).astype(np.int64)
              for task, classes in tasks.items()}
    return images, labels


def augmentation() -> list:
    import keras

    return [keras.layers.RandomFlip("horizontal", seed=1), keras.layers.RandomRotation(0.05, seed=2)]


def plain_pipeline(images: np.ndarray, labels: dict, batch: int, augment: list | None):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).map(
        lambda x, y: (tf.cast(x, tf.float32), y)).batch(batch)
    if augment:
        def apply(x, y):
            for layer in augment:
                x = layer(x, training=True)
            return x, y

        dataset = dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def smote_plan(images: np.ndarray, labels: np.ndarray):
    from facelab.context import BuildContext
    from facelab.manager import get_registry

    component = get_registry().get("balancer", "smote")
    smote = component.factory(component.validate({}, "data.balancer"), BuildContext("/tmp"))
    return smote.plan(images, labels, 0)


def pipelines(images: np.ndarray, labels: dict, batch: int, augmented: bool) -> dict:
    """name -> (rows per epoch, dataset): the plain pipeline, facelab's for identity and SMOTE."""
    from facelab.data import BalancePlan
    from facelab.inputs import host_tensor, make_dataset

    tensor = host_tensor(images)
    first_task = next(iter(labels))
    plans = {"identity": BalancePlan.identity(len(images)),
             "smote": smote_plan(images, labels[first_task])}
    out = {"plain": (len(images), plain_pipeline(images, labels, batch,
                                                 augmentation() if augmented else None))}
    for name, plan in plans.items():
        out[name] = (len(plan), make_dataset(tensor, labels, plan, batch, shuffle=True, seed=0,
                                             augment=augmentation() if augmented else None))
    return out


def read_epoch(dataset) -> float:
    start = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - start


def measure(sets: dict, run_epoch, rounds: int) -> dict[str, float]:
    """Median seconds per row of each pipeline, over interleaved rounds (after a warm-up)."""
    for _, dataset in sets.values():
        run_epoch(dataset)
    seconds: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(rounds):
        for name, (rows, dataset) in sets.items():
            seconds[name].append(run_epoch(dataset) / rows)
    return {name: statistics.median(values) for name, values in seconds.items()}


def reading(sizes: list[int], scale: float, batch: int, rounds: int, augment: list[bool]
            ) -> None:
    print(f"reading: images/s, batch {batch}, median of {rounds} interleaved rounds; "
          "ratio = facelab / plain")
    print(f"{'size':>5} {'augment':>8} {'images':>7} {'plain':>9} {'identity':>9} {'ratio':>6}"
          f" {'smote':>9} {'ratio':>6}")
    for size in sizes:
        count = max(batch * 4, round(READ_COUNTS.get(size, 800) * scale))
        images, labels = random_data(count, (size, size, 3), {"race": 4})
        for augmented in augment:
            per_row = measure(pipelines(images, labels, batch, augmented), read_epoch, rounds)
            rate = {name: 1 / seconds for name, seconds in per_row.items()}
            print(f"{size:>5} {'on' if augmented else 'off':>8} {count:>7} {rate['plain']:>9.0f}"
                  f" {rate['identity']:>9.0f} {rate['identity'] / rate['plain']:>6.2f}"
                  f" {rate['smote']:>9.0f} {rate['smote'] / rate['plain']:>6.2f}", flush=True)


def build_model(recipe_path: Path, overrides: list[str]):
    """The recipe's compiled model as ``facelab run`` builds it, its input shape, batch, tasks."""
    from facelab.context import QuietProgress
    from facelab.pipeline import compile_model, make_context, recipe_tasks
    from facelab.recipe import load_recipe

    for variable in ("UTKFACE_DIR", "GENKI4K_DIR", "IMDB_WIKI_DIR"):  # declared, never read
        os.environ.setdefault(variable, "/unused")
    recipe = load_recipe(recipe_path, overrides)
    ctx = make_context(recipe, QuietProgress())
    tasks = recipe_tasks(recipe, ctx)
    shape = recipe.detector.build(ctx).output_shape
    return compile_model(recipe, shape, tasks), shape, recipe.schema.train.batch_size, tasks


def training(count: int, rounds: int, only: list[str] | None) -> None:
    print(f"\ntraining: one fit epoch of {count} images, median of {rounds} interleaved rounds; "
          "ratio = facelab s/image / plain s/image")
    print(f"{'model':<26} {'input':>10} {'batch':>6} {'plain s':>8} {'identity':>9}"
          f" {'smote':>7}")
    for label, path, overrides in MODELS:
        if only and not any(word.lower() in label.lower() for word in only):
            continue
        model, shape, batch, tasks = build_model(path, overrides)
        images, labels = random_data(count, shape, {t: task.num_classes
                                                    for t, task in tasks.items()})
        sets = pipelines(images, labels, batch, augmented=False)

        def fit_epoch(dataset, model=model):
            start = time.perf_counter()
            model.fit(dataset, epochs=1, verbose=0)
            return time.perf_counter() - start

        per_row = measure(sets, fit_epoch, rounds)
        plain = per_row["plain"]
        print(f"{label:<26} {'x'.join(map(str, shape)):>10} {batch:>6} {plain * count:>8.2f}"
              f" {per_row['identity'] / plain:>9.2f} {per_row['smote'] / plain:>7.2f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--batch", type=int, default=32, help="batch size when reading")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--train-images", type=int, default=512,
                        help="images per training epoch")
    parser.add_argument("--quick", action="store_true",
                        help="a quarter of the images, 3 rounds, 256 training images")
    parser.add_argument("--augment", choices=["off", "on", "both"], default="both",
                        help="reading without augmentation, with it, or both")
    parser.add_argument("--no-training", action="store_true", help="reading only")
    parser.add_argument("--models", nargs="+", metavar="WORD",
                        help="train only the models whose label has one of these words")
    parser.add_argument("--no-reading", action="store_true", help="training only")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # the datasets shuffle themselves; Keras warns that its own shuffle flag is unused
    warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
    scale, rounds, train_images = 1.0, args.rounds, args.train_images
    if args.quick:
        scale, rounds, train_images = 0.25, 3, 256

    from facelab.evaluate import device_name

    print(f"device: {device_name()}, {os.cpu_count()} CPUs")
    if not args.no_reading:
        reading(args.sizes, scale, args.batch, rounds,
                {"off": [False], "on": [True], "both": [False, True]}[args.augment])
    if not args.no_training:
        training(train_images, rounds, args.models)


if __name__ == "__main__":
    main()
