"""The CLI surface: --version, --help with an example for every command, plugins, dry runs."""

from __future__ import annotations

import json

import pytest

import facelab
from conftest import RECIPES
from facelab.cli import cli


def test_version(cli_runner):
    result = cli_runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"facelab, version {facelab.__version__}"


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_with_an_example(cli_runner, command):
    result = cli_runner.invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"facelab {command}" in result.output


def test_plugins_filters_by_kind_and_wildcard(cli_runner):
    result = cli_runner.invoke(cli, ["plugins", "backbone", "simple*", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["kind"], r["name"]) for r in rows] == [("backbone", "simple-cnn")]
    assert rows[0]["package"] == "facelab" and rows[0]["version"] == facelab.__version__
    assert rows[0]["summary"].startswith("A small CNN")
    everything = json.loads(cli_runner.invoke(cli, ["plugins", "--json"]).output)
    kinds = {r["kind"] for r in everything}
    assert kinds == {"dataset", "detector", "split", "balancer", "augmentation", "backbone",
                     "attention", "head", "loss"}
    plural = json.loads(cli_runner.invoke(cli, ["plugins", "heads", "--json"]).output)
    assert plural and {r["kind"] for r in plural} == {"head"}
    full = json.loads(cli_runner.invoke(cli, ["plugins", "loss", "--all", "--json"]).output)
    assert all("params" in r and "doc" in r for r in full)


def test_plugins_table_lists_the_builtins(cli_runner):
    result = cli_runner.invoke(cli, ["plugins"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("synthetic", "simple-cnn", "classification", "cross-entropy", "flip"):
        assert name in result.output


def test_plugins_unknown_kind(cli_runner):
    result = cli_runner.invoke(cli, ["plugins", "backbnoe"])
    assert result.exit_code == 2
    assert "unknown component kind 'backbnoe'; did you mean 'backbone'?" in result.output


def test_dry_run_trains_nothing_and_creates_no_run(workdir, cli_runner):
    result = cli_runner.invoke(cli, ["run", str(RECIPES / "quickstart.yaml"), "--dry-run",
                                     "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert "nothing trained (--dry-run)" in result.output and "epochs: 2" in result.output
    assert not (workdir / "mlflow.db").exists() and not (workdir / "runs").exists()


def test_summary_and_data_json(workdir, cli_runner, shared_cache):
    result = cli_runner.invoke(cli, ["summary", str(RECIPES / "quickstart.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["input_shape"] == [48, 48, 3]
    assert summary["total"] == summary["trainable"] + summary["non_trainable"] > 0
    result = cli_runner.invoke(cli, ["data", str(RECIPES / "quickstart.yaml"), "--json",
                                     "--set", f"data.cache_dir={shared_cache}"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    used = counts["used"]["total"]
    assert used == sum(counts[s]["total"] for s in ("train", "val", "test"))
    assert counts["skipped"]["race others not in classes"] > 0
    assert counts["found"]["race"]["white"] > counts["found"]["race"]["asian"]  # UTKFace's skew
