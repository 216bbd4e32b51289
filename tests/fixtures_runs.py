"""A tiny quickstart run, trained and tracked as a user trains one (``facelab run``), for the
tests of what takes a trained run: predict, export, explain, sensitivity."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from conftest import RECIPES
from facelab.cli import cli

QUICKSTART = str(RECIPES / "quickstart.yaml")


def run_quickstart(folder: Path, overrides: Sequence[str], patch: pytest.MonkeyPatch
                   ) -> tuple[str, Path]:
    """``facelab run`` of the quickstart with ``overrides``, from ``folder`` (``patch`` moves
    there and drops $MLFLOW_TRACKING_URI, so mlflow.db and runs/ land there); returns its MLflow
    run id and its output folder."""
    from click.testing import CliRunner

    patch.chdir(folder)
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(cli, ["run", QUICKSTART,
                                      *[a for o in overrides for a in ("--set", o)]])
    assert result.exit_code == 0, result.output
    run_id = re.search(r"MLflow run: ([0-9a-f]{32})", result.output)[1]
    (output,) = (folder / "runs").iterdir()
    return run_id, output
