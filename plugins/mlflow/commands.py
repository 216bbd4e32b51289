"""The MLflow plugin's commands: ``facelab sweep``, ``runs``, ``compare``, ``ui`` and ``sync``.

They read (or, for ``sweep``, fill) the same store ``facelab run`` logs to. MLflow is imported
inside each command; TensorFlow only when a sweep trains.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.text import Text

from facelab.cli import SET, console, err_console, quiet_tensorflow
from facelab.errors import FacelabError
from facelab.tables import PlainTable

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


@click.command()
@click.argument("sources", nargs=-1, required=True, metavar="SWEEP_FILE | RECIPE...",
                type=click.Path(path_type=Path, dir_okay=False))
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
              help="With recipes: a recipe key and the values to try (commas inside [...] do "
                   "not split). Repeatable; every combination runs once.")
@SET
@click.option("--storage", metavar="URL", help="Optuna storage every worker shares, e.g. "
              "postgresql+psycopg2://user:password@host/db (default: the sweep file's, else "
              "optuna.db beside the MLflow store).")
@click.option("--study", "study_name", metavar="NAME", help="Study name; workers giving the "
              "same storage and name share one study (default: the sweep's name and hash).")
@click.option("--heartbeat", type=click.IntRange(1, 86_400), metavar="SECONDS",
              help="Seconds between a running trial's heartbeats (default 60).")
@click.option("--grace", type=click.IntRange(1, 864_000), metavar="SECONDS",
              help="Seconds without a heartbeat before a trial is failed and retried by a live "
                   "worker (default 180).")
@click.option("--shard", metavar="I/N", hidden=True)
@click.option("--dry-run", is_flag=True, help="Validate the sweep and list its trials (a grid's "
              "every point); train nothing.")
def sweep(sources: tuple[Path, ...], grid: tuple[str, ...], overrides: tuple[str, ...],
          storage: str | None, study_name: str | None, heartbeat: int | None,
          grace: int | None, shard: str | None, dry_run: bool) -> None:
    """Run a sweep as an Optuna study: each trial a child run of one MLflow parent run.

    SWEEP_FILE (`kind: sweep`, see recipes/sweeps/) gives the recipe, the space, the sampler
    (grid, random, tpe), the trials, the objective and a pruner. Or give RECIPES and --grid
    values: a grid over every combination. Run the same command on other machines with the
    same --storage (and --study) and they share the study: every trial runs once; a worker
    that dies has its trial retried by another after --grace seconds. --set applies to every
    trial, under its values. A failing trial is recorded and the sweep goes on (exit code 1 at
    the end); Ctrl-C or SIGTERM stops this worker, and its trial goes back to the queue.

    \b
    Examples:
      facelab sweep recipes/sweeps/quickstart-lr.yaml
      facelab sweep recipes/quickstart.yaml --grid model.attention.type=none,cbam \\
          --grid data.balancer.type=none,random-oversample --set train.epochs=3
      facelab sweep recipes/sweeps/race-2025-factorial.yaml \\
          --storage postgresql+psycopg2://facelab:secret@db-host/optuna   # on every machine
    """
    from dataclasses import replace

    from facelab.plugins.mlflow import study as studies
    from facelab.plugins.mlflow import sweep as sweeps

    if shard is not None:
        raise FacelabError(f"--shard {shard}: shards are replaced by shared studies; run the "
                           "same command on every machine with the same --storage URL and "
                           "they share the trials (docs/scaling.md)")
    studies.require_optuna()
    if len(sources) == 1 and sweeps.is_sweep_file(sources[0]):
        if grid:
            raise FacelabError(f"--grid with the sweep file {sources[0]}: put the values under "
                               "its space:")
        spec = sweeps.load_sweep_file(sources[0], overrides)
    else:
        spec = sweeps.sweep_from_grid(sources, grid, overrides)
    if heartbeat is not None or grace is not None:
        from facelab.registry import validate_params

        values = {**spec.heartbeat.model_dump(),
                  **({"interval": heartbeat} if heartbeat is not None else {}),
                  **({"grace": grace} if grace is not None else {})}
        spec = replace(spec, heartbeat=validate_params(sweeps.Heartbeat, values,
                                                       "--heartbeat/--grace"))
    spec = replace(spec, storage=storage or spec.storage, study=study_name or spec.study)
    points = sweeps.checked_points(spec)
    recipes = sweeps.validate(spec, points)  # every point, before TensorFlow starts
    if dry_run:
        _dry_run(spec, points, recipes)
        return
    from facelab.console import RichProgress

    progress = RichProgress(console)
    with progress.phase("starting TensorFlow"):
        quiet_tensorflow()
    from facelab.callbacks import EpochProgress
    from facelab.runner import run_recipe

    def run_one(recipe, name, tags, callbacks):
        return run_recipe(recipe, name=name, tags=tags, progress=progress, callbacks=callbacks)

    def epoch_lines(recipe):
        return [EpochProgress(progress, recipe.schema.train.epochs)]

    def on_start(number, size, name):
        console.rule(Text.assemble((f"trial {number}", "bold"), f" of {size}: {name}"))

    try:
        result = studies.run_study(spec, run=run_one, callbacks=epoch_lines, on_start=on_start,
                                   recipes=recipes)
        failed = False
    except studies.SweepFailed as exc:
        result, failed = exc.result, True
    table = PlainTable(title=f"study {result.study}")
    for column in ("trial", "run name", "state", "objective", "run id"):
        table.add_column(column, overflow="fold", no_wrap=column in ("trial", "run id"))
    for row in result.trials:
        state = row.state if not row.error else f"{row.state}: {row.error}"[:80]
        if row.retried_as is not None:
            state += f" (retried as {row.retried_as})"
        table.add_row(str(row.number), row.name or "-", state, _num(row.value),
                      _short(row.run_id))
    console.print(table)
    console.print(f"parent run {result.parent_run_id} (sweep {result.sweep_id}); study "
                  f"{result.study} in {result.storage}", markup=False, highlight=False,
                  soft_wrap=True)
    if failed:
        err_console.print(Text(f"{len(result.failed)} of {len(result.trials)} trials failed",
                               style="bold red"))
        sys.exit(1)


def _dry_run(spec, points, recipes) -> None:
    """Print what a validated sweep would run."""
    from facelab.plugins.mlflow import study as studies

    url = studies.storage_url(spec, recipes[0].schema.tracking.uri)
    if spec.sampler == "grid":
        table = PlainTable(title=f"sweep {spec.study_name()}: {len(points)} grid points, "
                                 "all valid (--dry-run)")
        for column in ("#", "run name", "recipe"):
            table.add_column(column, overflow="fold")
        for row in studies.trial_table_rows(spec, points, recipes):
            table.add_row(*row)
    else:
        table = PlainTable(title=f"sweep {spec.study_name()}: {spec.trials} {spec.sampler} "
                                 f"trials; {len(points)} corner points, all valid (--dry-run)")
        table.add_column("key", no_wrap=True)
        table.add_column("values", overflow="fold")
        for key, values in studies.describe_space(spec):
            table.add_row(key, values)
    console.print(table)
    metric = spec.objective.metric or "the first task's test accuracy"
    console.print(f"study {spec.study_name()} in {studies.shown_url(url)}; objective: "
                  f"{spec.objective.direction} {metric}; pruner: {spec.pruner.type}",
                  markup=False, highlight=False, soft_wrap=True)


@click.command()
@click.option("--experiment", "-e", metavar="NAME", help="Only this experiment (default: all).")
@click.option("--sweep", "sweep_id", metavar="SWEEP_ID", help="Only the runs of this sweep.")
@click.option("--filter", "filter_string", default="", metavar="EXPR",
              help="An MLflow search filter, e.g. \"params.`model.attention.type` = 'cbam'\".")
@click.option("--limit", "-n", default=20, show_default=True, help="Newest runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@TRACKING_URI
def runs(experiment: str | None, sweep_id: str | None, filter_string: str, limit: int,
         as_json: bool, uri: str | None) -> None:
    """List runs, newest first, with their key metrics (test accuracy and macro F1 per task,
    parameters, FPS).

    \b
    Examples:
      facelab runs
      facelab runs --experiment quickstart --json
    """
    from facelab.plugins.mlflow import store

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
        table.add_column(store.metric_label(column), justify="right", no_wrap=True)
    for row in rows:
        started = datetime.datetime.fromtimestamp(row["start_time"] / 1000)
        status = Text(row["status"], style="" if row["status"] == "FINISHED" else "red")
        table.add_row(_short(row["run_id"]),
                      *([names.get(row["experiment_id"], "?")] if several else []), row["name"],
                      status, started.strftime("%m-%d %H:%M"),
                      *(_num(row["metrics"].get(k)) for k in metrics))
    console.print(table)


@click.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--all", "show_all", is_flag=True, help="Show equal params too.")
@click.option("--metric", "patterns", multiple=True, metavar="GLOB",
              help="Only metrics matching this wildcard, e.g. 'test/*'. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@TRACKING_URI
def compare(run_ids: tuple[str, ...], show_all: bool, patterns: tuple[str, ...],
            as_json: bool, uri: str | None) -> None:
    """Compare runs side by side: the params that differ, then every final metric (overall,
    per class, macro and weighted averages, efficiency). Run ids may be unique prefixes.

    \b
    Examples:
      facelab compare 3e2dc0e0 157ccbc1
      facelab compare 3e2dc0e0 157ccbc1 --metric 'test/*' --json
    """
    from facelab.plugins.mlflow import store

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
    table.add_column("param", no_wrap=True)
    for header in headers:
        table.add_column(header)
    for key, values in [*result.params, *((f"tag {k}", v) for k, v in result.tags)]:
        table.add_row(key, *("-" if v is None else v for v in values))
    console.print(table)
    table = PlainTable(title="metrics (last value)")
    table.add_column("metric", no_wrap=True)
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
    running = store.running_ui(store.store_uri(uri))
    if running:
        console.print(f"compare in the MLflow UI: {store.compare_url(running, found)}",
                      highlight=False, soft_wrap=True, markup=False)
    else:
        base = uri if (uri or "").startswith(("http://", "https://")) else \
            "http://127.0.0.1:5000"
        console.print(f"compare in the MLflow UI (start it with `facelab ui`): "
                      f"{store.compare_url(base, found)}", highlight=False, soft_wrap=True,
                      markup=False)


@click.command()
@click.option("--port", "-p", default=5000, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface; keep 127.0.0.1 unless you mean to share the UI.")
@click.option("--experiment", "-e", metavar="NAME",
              help="Open on this experiment's runs (default: the newest run's experiment).")
@TRACKING_URI
def ui(port: int, host: str, uri: str | None, experiment: str | None) -> None:
    """Start the MLflow UI on the same store as `facelab run` (Ctrl-C stops it).

    It prints the address of the experiment's training runs once the server answers (the
    newest run's experiment, or --experiment). `facelab compare` then links to this server.

    \b
    Example:
      facelab ui --port 5001
      facelab ui --experiment quickstart
    """
    import signal
    import subprocess

    from facelab.plugins.mlflow import store

    resolved = store.store_uri(uri)
    if resolved.startswith(("http://", "https://")):
        console.print(f"{resolved} is a tracking server already: open it in a browser",
                      markup=False)
        return
    if not store.port_free(host, port):
        raise FacelabError(f"--port {port}: already in use on {host}; pick another, "
                           "e.g. --port 5001")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(Text(f"warning: --host {host} shares the UI (and every run in the "
                               "store) beyond this machine", style="yellow"))
    # The server (and its workers) get their own process group, led by a watchdog that ends
    # the group when this process is gone, however it ended (SIGKILL, a closed terminal:
    # watchdog.py); below, the group is stopped as a whole on Ctrl-C or SIGTERM.
    # Its own output goes to stderr: stdout carries only our lines (the address).
    process = subprocess.Popen(store.watched(store.ui_command(resolved, host, port)),
                               env=store.ui_env(), start_new_session=True,
                               stdout=sys.stderr.fileno())

    def terminated(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    base = f"http://{host}:{port}"
    state = None
    try:
        console.print(f"starting the MLflow server on {host}:{port} (store: {resolved})",
                      markup=False, highlight=False, soft_wrap=True)
        store.wait_until_serving(base, process)
        page = store.runs_url(base, store.client(uri), experiment)
        state = store.write_ui_state(resolved, base, process.pid)
        console.print(f"MLflow UI ready: {page}  (Ctrl-C to stop)", markup=False,
                      highlight=False, soft_wrap=True)
        sys.stdout.flush()
        sys.exit(process.wait())
    except KeyboardInterrupt:
        pass
    finally:
        if state is not None:
            state.unlink(missing_ok=True)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@click.command()
@click.argument("run_dir", metavar="RUN_OUTPUT_DIR",
                type=click.Path(path_type=Path, file_okay=False, exists=True))
@TRACKING_URI
def sync(run_dir: Path, uri: str | None) -> None:
    """Upload what a run kept for MLflow while its tracking store was unreachable.

    When the store fails mid-run, training goes on and the run keeps what MLflow missed in
    RUN_OUTPUT_DIR/mlflow_pending/ (epoch metrics, final metrics, the model, the outputs). This
    logs it to the run's MLflow run (a new one if it was never created), ends that run with the
    run's status (FINISHED, FAILED, KILLED) and removes mlflow_pending/. The store is the one
    the run used, unless --tracking-uri says otherwise.

    \b
    Examples:
      facelab sync runs/quickstart-20250101-120000
      facelab sync runs/quickstart-20250101-120000 --tracking-uri http://127.0.0.1:5000
    """
    from facelab.plugins.mlflow import pending

    run_id, status = pending.upload(run_dir, uri)
    console.print(f"synced {run_dir} to MLflow run {run_id} ({status})", markup=False,
                  highlight=False, soft_wrap=True)
