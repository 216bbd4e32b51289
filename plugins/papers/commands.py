"""The papers plugin's command: ``facelab paper-diff RUN_ID``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.text import Text

from facelab.cli import console
from facelab.plugins.mlflow.commands import TRACKING_URI, _short
from facelab.tables import PlainTable

@click.command("paper-diff")
@click.argument("run_id")
@click.option("--paper", "paper_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The paper's numbers (default: paper.yaml beside the run's recipe).")
@click.option("--row", help="The paper's model/config row (default: the one listing the run's "
                            "recipe file).")
@click.option("--no-log", is_flag=True, help="Print only; log nothing to the run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@TRACKING_URI
def paper_diff(run_id: str, paper_file: Path | None, row: str | None, no_log: bool,
               as_json: bool, uri: str | None) -> None:
    """Put a run next to the numbers its paper reports: parameter counts (exact), accuracy,
    per-class precision/recall/F1, support, and speed with both devices named ("different
    device" when they are not the same kind). The speeds of the newest `facelab bench --log`
    run of the same recipe are shown too; RUN_ID may also be a bench run. The table is
    logged to the run (artifact paper_diff/, metrics paper_diff/<metric> = run - paper).

    \b
    Example:
      facelab paper-diff 3e2dc0e0
      facelab paper-diff 3e2dc0e0 --row model2 --paper recipes/race-2025/paper.yaml
    """
    from facelab.plugins.mlflow import store
    from facelab.plugins.papers import paper_diff as papers

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
            delta = Text(f"{delta} exact", style="green") if line.match else Text(delta, style="red")
        table.add_row(line.section, line.quantity, papers.fmt(line.paper),
                      papers.fmt(line.run), delta, line.note)
    console.print(table)
    if diff.bench_run_id:
        console.print(f"speed (bench): from bench run {_short(diff.bench_run_id)} "
                      "(facelab bench --log), the newest of this recipe in the run's experiment",
                      highlight=False, markup=False)
    console.print(f"paper: {diff.paper_file}" + ("" if no_log else
                  "; logged to the run as paper_diff/ (artifact and metrics)"), highlight=False,
                  markup=False)
