"""The papers plugin: what reproducing a published method needs beyond components.

- the race paper's split protocol (``data.split: {type: race-2025}``);
- the tags ``facelab.paper`` and ``facelab.paper_file`` on runs of recipes with ``paper:``, and a
  copy of the paper's numbers (``paper.yaml`` beside the recipe) in the run's outputs;
- ``facelab paper-diff RUN_ID``: a run next to the numbers its paper reports.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import facelab
from facelab.split import SplitParams

#: The file beside a paper recipe (or in its parent folder) holding the paper's numbers.
PAPER_FILE = "paper.yaml"


def paper_file_beside(recipe_path: str | Path | None) -> Path | None:
    """``paper.yaml`` in the recipe's folder (or its parent folder), if there is one."""
    if recipe_path is None:
        return None
    folder = Path(recipe_path).resolve().parent
    for candidate in (folder / PAPER_FILE, folder.parent / PAPER_FILE):
        if candidate.is_file():
            return candidate
    return None


@facelab.hookimpl
def register_splits(register):
    from facelab.plugins.papers.split import build

    register("race-2025", build, SplitParams)


@facelab.hookimpl
def run_tags(recipe):
    if not recipe.schema.paper:
        return None
    tags = {"facelab.paper": recipe.schema.paper}
    paper = paper_file_beside(recipe.path)
    if paper is not None:
        tags["facelab.paper_file"] = str(paper)
    return tags


@facelab.hookimpl
def run_started(run, data):
    """Keep the paper's numbers with the run (logged as ``recipe/paper.yaml``)."""
    paper = run.tags.get("facelab.paper_file")
    if paper and Path(paper).is_file():
        shutil.copyfile(paper, run.output_dir / PAPER_FILE)


@facelab.hookimpl
def register_commands(cli):
    from facelab.plugins.papers.commands import paper_diff

    cli.add_command(paper_diff)
