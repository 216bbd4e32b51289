"""The ``facelab`` command line (click + rich)."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from facelab import __version__
from facelab.errors import FacelabError
from facelab.tables import PlainTable

console = Console()
err_console = Console(stderr=True)

RECIPE = click.argument("recipe", type=click.Path(path_type=Path, dir_okay=True))
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                   help="Override a recipe value (a YAML scalar), e.g. --set train.epochs=5. "
                        "Repeatable.")


def _quiet_tensorflow() -> None:
    """Import TensorFlow with stderr muted: its C++ start-up notices (oneDNN, CUDA probing) are
    printed before its logging honours TF_CPP_MIN_LOG_LEVEL. Import errors still raise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
    table = PlainTable(title="facelab components")
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
    from facelab.context import QuietProgress
    from facelab.model import build_model, parameter_counts, ram_mb
    from facelab.pipeline import make_context, recipe_tasks

    resolved = _load(recipe, overrides)
    ctx = make_context(resolved, QuietProgress())
    tasks = recipe_tasks(resolved, ctx)
    shape = resolved.detector.build(ctx).output_shape
    model = build_model(resolved, tuple(shape), tasks)
    counts = parameter_counts(model)
    counts["ram_mb"] = round(ram_mb(counts["total"]), 2)
    counts["input_shape"] = list(shape)
    if as_json:
        click.echo(json.dumps(counts))
        return
    table = PlainTable(title=f"{resolved.name}: model summary")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("input shape", "x".join(map(str, shape)))
    table.add_row("total parameters", f"{counts['total']:,}")
    table.add_row("trainable parameters", f"{counts['trainable']:,}")
    table.add_row("non-trainable parameters", f"{counts['non_trainable']:,}")
    table.add_row("RAM (MB, eq. 7, float32)", f"{counts['ram_mb']:.2f}")
    console.print(table)


# --------------------------------------------------------------------------------------------
# Comparing configurations in MLflow: sweep, runs, compare, ui, paper-diff
# --------------------------------------------------------------------------------------------

TRACKING_URI = click.option(
    "--tracking-uri", "uri", metavar="URI",
    help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here).")


def _short(run_id: str | None) -> str:
    return (run_id or "-")[:8]


def _num(value) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{round(value):,}"
    return f"{value:.4f}"


def _metric_header(key: str) -> str:
    """``test_race_accuracy`` -> ``race acc``; ``test_race_macro_avg_f1-score`` -> ``race F1``."""
    names = {"total_params": "params", "fps": "FPS"}
    if key in names:
        return names[key]
    key = key.removeprefix("test_")
    return key.replace("_macro_avg_f1-score", " F1").replace("_accuracy", " acc")


@cli.command()
@click.argument("recipes", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
              help="A recipe key and the values to try (commas inside [...] do not split). "
                   "Repeatable; every combination runs.")
@SET
@click.option("--shard", metavar="I/N", help="Run only shard I of N (1-based): combinations "
              "k with k % N == I-1, for machines sharing one tracking server.")
@click.option("--dry-run", is_flag=True, help="Validate every combination and list them; "
              "train nothing.")
@handle_errors
def sweep(recipes: tuple[Path, ...], grid: tuple[str, ...], overrides: tuple[str, ...],
          shard: str | None, dry_run: bool) -> None:
    """Run every combination of RECIPES x --grid values as child runs of one MLflow parent run.

    Every combination is validated before any run starts. --set applies to all of them, under
    the grid's values. A failing child is recorded and the sweep goes on (exit code 1 at the
    end); Ctrl-C or SIGTERM stops it, ending the runs KILLED.

    \b
    Examples:
      facelab sweep recipes/quickstart.yaml --grid model.attention.type=none,cbam \\
          --grid data.balancer.type=none,oversample --set train.epochs=3
      facelab sweep recipes/race-2025/base.yaml recipes/race-2025/bd.yaml \\
          recipes/race-2025/bd-am.yaml --shard 1/3
    """
    from facelab import sweep as sweeps

    if dry_run:
        parsed = sweeps.parse_grid(grid)
        every = sweeps.combinations(recipes, parsed)
        index, count = sweeps.parse_shard(shard)
        loaded = sweeps.validate(every, overrides)
        mine = {c.index for c in sweeps.shard(every, index, count)}
        sweep_id = sweeps.sweep_id(recipes, parsed, overrides)
        table = PlainTable(title=f"sweep {sweep_id}: {len(every)} combinations, all valid "
                                 "(--dry-run)")
        for column in ("#", "run name", "recipe", f"shard {index}/{count}"):
            table.add_column(column, overflow="fold")
        for combo, recipe in zip(every, loaded):
            table.add_row(str(combo.index), combo.label(recipe.name), str(combo.recipe_path),
                          "yes" if combo.index in mine else "")
        console.print(table)
        return
    from facelab.console import EpochProgress, RichProgress
    from facelab.runner import run_recipe

    progress = RichProgress(console)

    def run_one(recipe, name):
        return run_recipe(recipe, progress=progress,
                          callbacks=[EpochProgress(progress, recipe.schema.train.epochs)])

    def on_start(position, total, name):
        console.rule(f"[bold]{position}/{total}[/bold] {escape(name)}")

    try:
        result = sweeps.run_sweep(recipes, grid, overrides, shard, run=run_one,
                                  on_start=on_start)
        failed = False
    except sweeps.SweepFailed as exc:
        result, failed = exc.result, True
    keys = sorted({k for c in result.children for k in c.metrics})
    table = PlainTable(title=f"sweep {result.sweep_id} (parent run {result.parent_run_id})")
    table.add_column("run id", no_wrap=True)
    table.add_column("run name", overflow="fold", min_width=16)
    table.add_column("status", overflow="fold")
    for key in keys:
        table.add_column(_metric_header(key), justify="right", no_wrap=True)
    for child in result.children:
        table.add_row(_short(child.run_id), child.name,
                      child.status if not child.error else f"{child.status}: {child.error}"[:80],
                      *(_num(child.metrics.get(k)) for k in keys))
    console.print(table)
    if failed:
        err_console.print(f"[bold red]{len(result.failed)} of {len(result.children)} runs "
                          "failed[/bold red]")
        sys.exit(1)


@cli.command()
@click.option("--experiment", "-e", metavar="NAME", help="Only this experiment (default: all).")
@click.option("--sweep", "sweep_id", metavar="SWEEP_ID", help="Only the runs of this sweep.")
@click.option("--filter", "filter_string", default="", metavar="EXPR",
              help="An MLflow search filter, e.g. \"params.`model.attention.type` = 'cbam'\".")
@click.option("--limit", "-n", default=20, show_default=True, help="Newest runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@TRACKING_URI
@handle_errors
def runs(experiment: str | None, sweep_id: str | None, filter_string: str, limit: int,
         as_json: bool, uri: str | None) -> None:
    """List runs, newest first, with their key metrics (test accuracy and macro F1 per task,
    parameters, FPS).

    \b
    Examples:
      facelab runs
      facelab runs --experiment quickstart --json
    """
    from facelab import runs as store

    client = store.client(uri)
    found = store.search(client, experiment, limit, filter_string, sweep_id)
    metrics = store.key_metrics(found)
    rows = [store.run_row(r, metrics) for r in found]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    import datetime

    names = {e.experiment_id: e.name for e in client.search_experiments()}
    table = PlainTable(title=f"{len(rows)} runs ({store.store_uri(uri)})",
                  caption="acc: test accuracy; F1: test macro F1")
    several = len({row["experiment_id"] for row in rows}) > 1
    table.add_column("run id", no_wrap=True)
    if several:
        table.add_column("experiment", overflow="fold")
    table.add_column("name", overflow="fold", min_width=12)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    for column in metrics:
        table.add_column(_metric_header(column), justify="right", no_wrap=True)
    for row in rows:
        started = datetime.datetime.fromtimestamp(row["start_time"] / 1000)
        status = row["status"] if row["status"] == "FINISHED" else f"[red]{row['status']}[/red]"
        table.add_row(_short(row["run_id"]),
                      *([names.get(row["experiment_id"], "?")] if several else []), row["name"],
                      status, started.strftime("%m-%d %H:%M"),
                      *(_num(row["metrics"].get(k)) for k in metrics))
    console.print(table)


@cli.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--all", "show_all", is_flag=True, help="Show equal params too.")
@click.option("--metric", "patterns", multiple=True, metavar="GLOB",
              help="Only metrics matching this wildcard, e.g. 'test_*'. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@TRACKING_URI
@handle_errors
def compare(run_ids: tuple[str, ...], show_all: bool, patterns: tuple[str, ...],
            as_json: bool, uri: str | None) -> None:
    """Compare runs side by side: the params that differ, then every final metric (overall,
    per class, macro and weighted averages, efficiency). Run ids may be unique prefixes.

    \b
    Examples:
      facelab compare 3e2dc0e0 157ccbc1
      facelab compare 3e2dc0e0 157ccbc1 --metric 'test_*' --json
    """
    from facelab import runs as store

    client = store.client(uri)
    found = [store.resolve_run(client, r) for r in run_ids]
    result = store.compare(found, show_all, patterns)
    if as_json:
        click.echo(json.dumps({
            "runs": [{"run_id": r.info.run_id, "name": r.info.run_name,
                      "status": r.info.status} for r in found],
            "params": dict(result.params), "tags": dict(result.tags),
            "metrics": dict(result.metrics)}, indent=2))
        return
    headers = [f"{r.info.run_name}\n{_short(r.info.run_id)}" for r in found]
    two = len(found) == 2
    table = PlainTable(title=f"params that differ ({len(result.params)}; "
                        f"{result.same_params} equal{' shown' if show_all else ' hidden'})")
    table.add_column("param")
    for header in headers:
        table.add_column(header)
    for key, values in [*result.params, *((f"tag {k}", v) for k, v in result.tags)]:
        table.add_row(key, *("-" if v is None else v for v in values))
    console.print(table)
    table = PlainTable(title="metrics (last value)")
    table.add_column("metric")
    for header in headers:
        table.add_column(header, justify="right")
    if two:
        table.add_column("delta (2nd - 1st)", justify="right")
    for key, values in result.metrics:
        cells = [_num(v) for v in values]
        if two:
            a, b = values
            cells.append("-" if a is None or b is None else f"{b - a:+.4f}")
        table.add_row(key, *cells)
    console.print(table)
    console.print(f"in the MLflow UI (facelab ui): {store.compare_url('http://127.0.0.1:5000', found)}",
                  highlight=False, soft_wrap=True)


@cli.command()
@click.option("--port", "-p", default=5000, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface; keep 127.0.0.1 unless you mean to share the UI.")
@TRACKING_URI
@handle_errors
def ui(port: int, host: str, uri: str | None) -> None:
    """Start the MLflow UI on the same store as `facelab run` (Ctrl-C stops it).

    \b
    Example:
      facelab ui --port 5001
    """
    import signal
    import subprocess

    from facelab import runs as store

    resolved = store.store_uri(uri)
    if resolved.startswith(("http://", "https://")):
        console.print(f"{resolved} is a tracking server already: open it in a browser")
        return
    if not store.port_free(host, port):
        raise FacelabError(f"--port {port}: already in use on {host}; pick another, "
                           "e.g. --port 5001")
    # The server (and its workers) get their own process group, stopped as a whole below, also
    # when we are stopped by SIGTERM rather than Ctrl-C.
    process = subprocess.Popen(store.ui_command(resolved, host, port), env=store.ui_env(),
                               start_new_session=True)

    def terminated(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    click.echo(f"MLflow UI: http://{host}:{port}  (Ctrl-C to stop)")
    click.echo(f"store: {resolved}")
    sys.stdout.flush()
    try:
        sys.exit(process.wait())
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@cli.command("paper-diff")
@click.argument("run_id")
@click.option("--paper", "paper_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The paper's numbers (default: paper.yaml beside the run's recipe).")
@click.option("--row", help="The paper's model/config row (default: the one listing the run's "
                            "recipe file).")
@click.option("--no-log", is_flag=True, help="Print only; log nothing to the run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@TRACKING_URI
@handle_errors
def paper_diff(run_id: str, paper_file: Path | None, row: str | None, no_log: bool,
               as_json: bool, uri: str | None) -> None:
    """Put a run next to the numbers its paper reports: parameter counts (exact), accuracy,
    per-class precision/recall/F1, support, and speed with both devices named. The table is
    logged to the run (artifact paper_diff/, metrics paper_diff/<metric> = run - paper).

    \b
    Example:
      facelab paper-diff 3e2dc0e0
      facelab paper-diff 3e2dc0e0 --row model2 --paper recipes/race-2025/paper.yaml
    """
    from facelab import paper_diff as papers
    from facelab import runs as store

    client = store.client(uri)
    run = store.resolve_run(client, run_id)
    diff = papers.paper_diff(client, run, paper_file, row, log=not no_log)
    if as_json:
        click.echo(json.dumps(diff.as_dict(), indent=2))
        return
    table = PlainTable(title=f"{diff.run_name} ({_short(diff.run_id)}) vs {diff.paper}, "
                        f"row {diff.row}")
    for column in ("section", "quantity", "paper", "run", "delta", "note"):
        table.add_column(column, justify="right" if column in ("paper", "run", "delta")
                         else "left")
    for line in diff.lines:
        delta = papers.fmt(line.delta, sign=True)
        if line.match is not None:
            delta = f"[green]{delta} exact[/green]" if line.match else f"[red]{delta}[/red]"
        table.add_row(line.section, line.quantity, papers.fmt(line.paper),
                      papers.fmt(line.run), delta, line.note)
    console.print(table)
    console.print(f"paper: {diff.paper_file}" + ("" if no_log else
                  "; logged to the run as paper_diff/ (artifact and metrics)"), highlight=False)


def main() -> None:
    cli(prog_name="facelab")


if __name__ == "__main__":
    main()
