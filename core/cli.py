"""The ``facelab`` command line (click + rich)."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from facelab import __version__
from facelab.errors import FacelabError

console = Console()
err_console = Console(stderr=True)

RECIPE = click.argument("recipe", type=click.Path(path_type=Path, dir_okay=True))
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                   help="Override a recipe value (a YAML scalar), e.g. --set train.epochs=5. "
                        "Repeatable.")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def handle_errors(fn):
    """User errors: one red line on stderr, exit code 2; ``--debug`` shows the traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FacelabError as exc:
            if click.get_current_context().find_root().params.get("debug"):
                raise
            err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facelab")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """facelab: plugin-based experiments for face-attribute classification.

    \b
    Example:
      facelab run recipes/quickstart.yaml
      facelab plugins backbone 'eff*'
    """
    _quiet_tensorflow()


def _load(recipe: Path, overrides: tuple[str, ...]):
    from facelab.recipe import load_recipe

    return load_recipe(recipe, overrides)


@cli.command()
@RECIPE
@SET
@click.option("--dry-run", is_flag=True, help="Validate and show the plan; train nothing.")
@handle_errors
def run(recipe: Path, overrides: tuple[str, ...], dry_run: bool) -> None:
    """Run a recipe: data, training, evaluation, report and MLflow run.

    \b
    Example:
      facelab run recipes/quickstart.yaml --set train.epochs=3
    """
    resolved = _load(recipe, overrides)
    if dry_run:
        console.print(f"[green]valid[/green] {recipe}: would run [bold]{resolved.name}[/bold] "
                      f"(tasks: {', '.join(resolved.tasks)}); nothing trained (--dry-run)")
        console.print(resolved.to_yaml(), highlight=False, markup=False)
        return
    from facelab.console import EpochProgress, RichProgress, confusion_table, metrics_table
    from facelab.runner import run_recipe

    progress = RichProgress(console)
    callbacks = [EpochProgress(progress, resolved.schema.train.epochs)]
    result = run_recipe(resolved, progress=progress, callbacks=callbacks)
    for split, tasks in result.metrics.items():
        if split != "test":
            continue
        for task, metrics in tasks.items():
            console.print(metrics_table(task, split, metrics))
            classes = [k for k in metrics["report"] if k not in ("accuracy", "macro avg",
                                                                  "weighted avg")]
            console.print(confusion_table(task, split, metrics["confusion"], classes))
    eff = result.efficiency
    console.print(f"params {eff['total_params']:,} ({eff['trainable_params']:,} trainable), "
                  f"RAM {eff['ram_mb']:.2f} MB, {eff['ms_per_image']:.2f} ms/image, "
                  f"{eff['fps']:.0f} FPS at batch {eff['batch_size']} on {eff['device']}; "
                  f"training {eff['train_seconds']:.1f} s")
    console.print(f"outputs: {result.output_dir}")
    if result.run_id:
        console.print(f"MLflow run: {result.run_id}")


@cli.command()
@RECIPE
@SET
@handle_errors
def validate(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Validate a recipe and every component's parameters; no work is done.

    \b
    Example:
      facelab validate recipes/quickstart.yaml --set model.backbone.type=simple-cnn
    """
    resolved = _load(recipe, overrides)
    console.print(f"[green]valid[/green] {recipe}: {resolved.name} "
                  f"(tasks: {', '.join(resolved.tasks)})")


@cli.command()
@RECIPE
@SET
@handle_errors
def show(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Print the resolved recipe (extends merged, overrides applied, defaults filled) as YAML.

    \b
    Example:
      facelab show recipes/quickstart.yaml --set train.epochs=1
    """
    click.echo(_load(recipe, overrides).to_yaml(), nl=False)


@cli.command()
@click.argument("kind", required=False)
@click.argument("pattern", required=False)
@click.option("--all", "show_all", is_flag=True, help="Show parameters and full docs too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def plugins(kind: str | None, pattern: str | None, show_all: bool, as_json: bool) -> None:
    """List registered components: name, kind, package, version and summary.

    KIND is one of dataset, detector, balancer, augmentation, backbone, attention, head, loss
    (plural forms work too); PATTERN is a shell wildcard.

    \b
    Example:
      facelab plugins backbone 'eff*'
      facelab plugins --json
    """
    from facelab.errors import did_you_mean
    from facelab.manager import get_registry
    from facelab.registry import KINDS

    if kind is not None and kind not in KINDS:
        singular = kind[:-1] if kind.endswith("s") else kind
        if singular in KINDS:
            kind = singular
        elif pattern is None and any(c in kind for c in "*?["):
            kind, pattern = None, kind
        else:
            raise FacelabError(did_you_mean(kind, KINDS, what="component kind"))
    components = get_registry().find(kind, pattern)
    if as_json:
        click.echo(json.dumps([_component_json(c, show_all) for c in components], indent=2))
        return
    table = Table(title="facelab components")
    for column in ("kind", "name", "package", "version", "summary"):
        table.add_column(column)
    for c in components:
        table.add_row(c.kind, c.name, c.origin.package, c.origin.version, c.summary)
        if show_all:
            for name, f in c.params.model_fields.items():
                default = "required" if f.is_required() else repr(f.default)
                table.add_row("", f"  {name}", "", default, f.description or "")
    console.print(table)


def _component_json(c, full: bool) -> dict:
    out = {"kind": c.kind, "name": c.name, "package": c.origin.package,
           "version": c.origin.version, "plugin": c.origin.plugin, "builtin": c.origin.builtin,
           "summary": c.summary}
    if full:
        out["doc"] = c.doc
        out["params"] = c.params.model_json_schema()
    return out


@cli.command()
@RECIPE
@SET
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def data(recipe: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Load, crop, split and balance a recipe's data; print class counts at every stage.

    \b
    Example:
      facelab data recipes/quickstart.yaml --json
    """
    from facelab.console import RichProgress, counts_table
    from facelab.context import QuietProgress
    from facelab.pipeline import make_context, prepare_data

    resolved = _load(recipe, overrides)
    progress = QuietProgress() if as_json else RichProgress(console)
    prepared = prepare_data(resolved, make_context(resolved, progress))
    if as_json:
        click.echo(json.dumps(prepared.counts, indent=2))
        return
    tasks = {name: list(task.classes) for name, task in prepared.tasks.items()}
    for table in counts_table(prepared.counts, tasks):
        console.print(table)


@cli.command()
@RECIPE
@SET
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def summary(recipe: Path, overrides: tuple[str, ...], as_json: bool) -> None:
    """Build a recipe's model and print its parameters and RAM (the race paper's eq. 7).

    \b
    Example:
      facelab summary recipes/race-2025/bd-am.yaml --set model.backbone.weights=null
    """
    from facelab.model import build_model, parameter_counts, ram_mb
    from facelab.pipeline import make_context

    resolved = _load(recipe, overrides)
    from facelab.context import QuietProgress

    ctx = make_context(resolved, QuietProgress())
    tasks = {}
    for source, spec in resolved.datasets.items():
        if spec.component.tasks is None:
            from facelab.pipeline import load_table

            tasks.update(load_table(resolved, ctx).tasks)
            break
        tasks.update(spec.component.tasks(spec.params))
    from facelab.errors import did_you_mean

    for task in resolved.tasks:
        if task not in tasks:
            raise FacelabError(f"model.heads.{task}: {did_you_mean(task, tasks, what='task')}")
    shape = resolved.detector.build(ctx).output_shape
    model = build_model(resolved, tuple(shape), {t: tasks[t] for t in resolved.tasks})
    counts = parameter_counts(model)
    counts["ram_mb"] = round(ram_mb(counts["total"]), 2)
    counts["input_shape"] = list(shape)
    if as_json:
        click.echo(json.dumps(counts))
        return
    table = Table(title=f"{resolved.name}: model summary")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("input shape", "x".join(map(str, shape)))
    table.add_row("total parameters", f"{counts['total']:,}")
    table.add_row("trainable parameters", f"{counts['trainable']:,}")
    table.add_row("non-trainable parameters", f"{counts['non_trainable']:,}")
    table.add_row("RAM (MB, eq. 7, float32)", f"{counts['ram_mb']:.2f}")
    console.print(table)


def main() -> None:
    cli(prog_name="facelab")


if __name__ == "__main__":
    main()
