"""The preflight: settings that pass `validate` but cannot work with the model (an input too
small for the backbone, a batch too large for memory) fail at the start of `run`, before the
data is prepared and before any run exists, with one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import RECIPES
from facelab.cli import cli

QUICKSTART = RECIPES / "quickstart.yaml"
TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=1", "evaluate.figures=false", "evaluate.timing_batches=1"]


@pytest.mark.parametrize("setting, message", [
    ("model.backbone.filters=[8,8,8,8,8,8]",
     "error: model.backbone: input 24x24x3 is too small for simple-cnn"),
    ("evaluate.batch_size=1000000000", "error: evaluate.batch_size 1000000000 does not fit in "
                                       "memory on "),
    ("train.batch_size=1000000000", "error: train.batch_size 1000000000 (or "
                                    "evaluate.batch_size) does not fit in memory on "),
])
def test_what_cannot_work_fails_first_in_one_line(workdir, cli_runner, tmp_path, setting,
                                                  message):
    cache = tmp_path / "cache"
    args = ["run", str(QUICKSTART), "--set", f"data.cache_dir={cache}", "--set", setting]
    for item in TINY:
        args += ["--set", item]
    assert cli_runner.invoke(cli, ["validate", *args[1:]]).exit_code == 0
    result = cli_runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert line.startswith(message), line
    assert "Traceback" not in result.output
    # before the data and before any run: nothing generated, no output folder, no MLflow run
    assert not cache.exists() or not any(cache.rglob("*.jpg"))
    assert not Path("runs").exists() and not Path("mlflow.db").exists()
