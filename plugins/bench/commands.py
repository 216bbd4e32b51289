"""``facelab bench RECIPE...``: the command, its tables and its JSON. Only click and the CLI's
console are imported here; TensorFlow and MLflow when the command runs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from facelab.cli import SET, console, err_console, quiet_tensorflow
from facelab.errors import FacelabError
from facelab.tables import PlainTable


def _settings(values: dict[str, str | None]):
    """The options as :class:`BenchSettings`: whole numbers in range, else one line."""
    from facelab.plugins.bench.measure import BenchSettings
    from facelab.registry import validate_params

    numbers = {}
    for key, text in values.items():
        if text is None:
            continue
        try:
            numbers[key] = int(text)
        except ValueError:
            raise FacelabError(f"--{key.replace('_', '-')} {text}: expected a whole number") \
                from None
    try:
        return validate_params(BenchSettings, numbers, "")
    except FacelabError as exc:
        key, _, rest = str(exc).partition(":")
        raise FacelabError(f"--{key.replace('_', '-')}:{rest}") from None


def _note(message: str) -> None:
    err_console.print(Text(message, style="dim"), highlight=False, soft_wrap=True)


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if abs(value) < 1e5 else f"{value:,.0f}"


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def speed_table(result) -> PlainTable:
    """One recipe: facelab's path next to the plain Keras loop, and their ratio."""
    table = PlainTable(title=f"{result.recipe}: input {'x'.join(map(str, result.input_shape))}, "
                             f"median of {result.rounds} rounds of {result.batches} batches")
    table.add_column("quantity")
    for column in ("facelab", "plain Keras", "ratio"):
        table.add_column(column, justify="right")
    rows = (
        (f"training (images/s, batch {result.batch_size})", result.train, 1),
        (f"inference (FPS, batch {result.eval_batch_size})", result.inference, 1),
        ("input pipeline (images/s)", result.pipeline, 0),
    )
    for label, speed, digits in rows:
        table.add_row(label, _num(speed.facelab, digits), _num(speed.plain, digits),
                      f"{speed.ratio:.2f}")
    table.add_row("inference (ms/image)", f"{result.ms_per_image:.3f}",
                  f"{1000 / result.inference.plain:.3f}", f"{result.inference.ratio:.2f}")
    table.add_row("parameters (total)", f"{result.parameters['total']:,}", "", "")
    table.add_row("parameters (trainable)", f"{result.parameters['trainable']:,}", "", "")
    table.add_row("RAM (MB, eq. 7, float32)", f"{result.ram_mb:.2f}", "", "")
    return table


def table3(results: list) -> PlainTable:
    """The race paper's Table 3 layout: training time for N epochs, ms per image, FPS."""
    epochs = {r.epochs for r in results}
    table = PlainTable(title="Table 3 layout: training time (an estimate) for "
                             f"{_epochs(epochs.pop()) if len(epochs) == 1 else 'N epochs'}, "
                             "test time per image and frames per second")
    table.add_column("model")
    table.add_column("paper row")
    table.add_column("training time (s)", justify="right")
    table.add_column("test ms per image", justify="right")
    table.add_column("test FPS", justify="right")
    several = len({r.epochs for r in results}) > 1
    for r in results:
        seconds = _num(r.train_seconds, 0)
        if several and r.train_seconds is not None:
            seconds += f" ({_epochs(r.epochs)})"
        table.add_row(r.recipe, r.train_samples.paper_row or "-", seconds,
                      f"{r.ms_per_image:.3f}", _num(r.inference.facelab, 0))
    return table


def table3_sources(results: list) -> list[str]:
    """How each training time was estimated."""
    lines = []
    for r in results:
        if r.train_seconds is None:
            lines.append(f"{r.recipe}: no training time: its training set size is "
                         f"{r.train_samples.source}")
        else:
            lines.append(f"{r.recipe}: {_epochs(r.epochs)} x {r.train_samples.count:,} training "
                         f"images ({r.train_samples.source}) / {r.train.facelab:,.1f} "
                         "measured training images/s")
    return lines


@click.command()
@click.argument("recipes", nargs=-1, required=True, metavar="RECIPE...",
                type=click.Path(path_type=Path))
@SET
@click.option("--epochs", metavar="N", help="N of Table 3's 'training time for N epochs' "
                                            "(default: the recipe's train.epochs).")
@click.option("--batches", metavar="N", help="Timed batches per round and path (default 3).")
@click.option("--rounds", metavar="N", help="Interleaved rounds; medians are reported "
                                            "(default 3).")
@click.option("--train-samples", metavar="N",
              help="Training set size for Table 3's training time (default: the images the "
                   "recipe's paper trained on, when it reproduces one).")
@click.option("--table3", "show_table3", is_flag=True,
              help="Print the race paper's Table 3 layout (automatic for several recipes).")
@click.option("--log", "log_runs", is_flag=True,
              help="Record each recipe's numbers as an MLflow run (tag facelab.bench=true) in "
                   "its tracking store and experiment, for `facelab paper-diff`.")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE", help="Write the numbers to FILE as JSON.")
def bench(recipes: tuple[Path, ...], overrides: tuple[str, ...], epochs: str | None,
          batches: str | None, rounds: str | None, train_samples: str | None,
          show_table3: bool, log_runs: bool, json_file: Path | None) -> None:
    """Measure a recipe's speed on this machine, next to a plain Keras loop on the same model.

    On synthetic images of the recipe's input size (no data are read): training images/s
    (facelab's input pipeline and fit vs a freshly built copy fed by from_tensor_slices),
    inference ms/image and FPS at evaluate.batch_size (predict_on_batch on both), the
    input pipeline's images/s, parameters and eq. 7 RAM, and the device. Ratios are
    facelab / plain speed: above 1, facelab's path is faster. ImageNet weights that are not
    available offline are replaced by weights: null (speed does not depend on them).

    With several recipes (or --table3) it also prints the race paper's Table 3 layout:
    training time for N epochs (an estimate: N x training images / measured images/s),
    ms per image and FPS.

    \b
    Example:
      facelab bench recipes/quickstart.yaml
      facelab bench recipes/race-2025/base.yaml recipes/race-2025/bd.yaml \\
          recipes/race-2025/bd-am.yaml --set 'data.detector.size=[96,96]' --batches 2 --log
    """
    settings = _settings({"batches": batches, "rounds": rounds, "epochs": epochs,
                          "train_samples": train_samples})
    from facelab.plugins.bench.measure import (bench_recipe, load_bench_recipe,
                                               quiet_retracing_warnings)

    loaded = []
    for path in recipes:  # every recipe is checked before any is measured
        notes: list[str] = []
        loaded.append((load_bench_recipe(path, overrides, notes), notes))
    quiet_tensorflow()
    import keras

    results = []
    for recipe, notes in loaded:
        with console.status(f"{recipe.name}: starting") as status, quiet_retracing_warnings():
            recipe, result = bench_recipe(recipe, settings, notes=notes,
                                  log=lambda message: status.update(f"{message}..."))
        results.append((recipe, result))
        keras.utils.clear_session(free_memory=True)  # the next recipe's models start afresh
        console.print(speed_table(result))
        for note in result.notes:
            _note(f"note: {note}")
    console.print(f"device: {results[0][1].device}; ratios are facelab / plain Keras speed "
                  "(above 1: facelab is faster)", highlight=False, markup=False)
    if show_table3 or len(results) > 1:
        only = [result for _, result in results]
        console.print(table3(only))
        for line in table3_sources(only):
            _note(line)
    if json_file is not None:
        from facelab.files import write_json

        write_json(json_file, {"device": results[0][1].device,
                               "recipes": [result.to_json() for _, result in results]})
        console.print(f"wrote {json_file}", highlight=False, markup=False)
    if log_runs:
        from facelab.plugins.bench.record import log_result

        for recipe, result in results:
            run_id = log_result(recipe, result)
            hint = f"; compare with its paper: facelab paper-diff {run_id[:8]}" \
                if recipe.schema.paper else ""
            console.print(f"{recipe.name}: logged as MLflow run {run_id} (experiment "
                          f"{recipe.schema.tracking.experiment}){hint}", highlight=False,
                          markup=False)
