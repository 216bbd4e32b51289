"""The core is an engine: it imports no plugin, names no paper and no tracking backend, and a run
trains, evaluates and writes its outputs with the MLflow plugin left out."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import RECIPES, REPO

CORE = REPO / "core"
#: Words the engine's code (not its docstrings or comments) must not contain.
FORBIDDEN_WORDS = ("mlflow", "race-2025", "multitask-2023", "rohani", "utkface", "genki",
                   "imdb", "efficientnet", "cbam", "smote", "mtcnn")


def _code_strings_and_imports(path):
    """String constants that are not docstrings, and imported module names."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    strings, imports = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            strings.append(node.value)
        elif isinstance(node, ast.Import):
            imports += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.append(node.module)
    return strings, imports


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_knows_no_plugin_paper_or_tracking_backend(path):
    strings, imports = _code_strings_and_imports(path)
    assert not [m for m in imports if m.split(".")[0] == "mlflow"
                or m.startswith("facelab.plugins.")], imports
    named = [(word, s) for s in strings for word in FORBIDDEN_WORDS if word in s.lower()]
    assert not named, f"core/{path.name} names {named}"


def test_a_run_without_the_mlflow_plugin_trains_and_writes_its_outputs(tmp_path, shared_cache):
    """FACELAB_DISABLE_PLUGINS=mlflow: the run completes, writes every output, and no MLflow
    store is created; MLflow is never imported."""
    env = dict(os.environ, FACELAB_DISABLE_PLUGINS="mlflow", MLFLOW_TRACKING_URI="")
    script = (
        "import sys\n"
        "from facelab.cli import cli\n"
        "try:\n"
        f"    cli(['run', {str(RECIPES / 'quickstart.yaml')!r}, '--set', "
        f"'data.cache_dir={shared_cache}', '--set', 'data.dataset.count=200', '--set', "
        "'data.dataset.size=24', '--set', 'data.detector.size=[24,24]', '--set', "
        "'train.epochs=1', '--set', 'evaluate.timing_batches=1'], standalone_mode=False)\n"
        "finally:\n"
        "    print('MLFLOW-IMPORTED' if 'mlflow' in sys.modules else 'MLFLOW-NOT-IMPORTED')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MLFLOW-NOT-IMPORTED" in done.stdout
    assert "MLflow run" not in done.stdout
    assert not (tmp_path / "mlflow.db").exists()
    (output,) = (tmp_path / "runs").glob("quickstart-*")
    for name in ("recipe.yaml", "data_counts.json", "history.json", "metrics.json",
                 "efficiency.json", "model_summary.txt", "reports/test_race_report.csv",
                 "figures/curves.png"):
        assert (output / name).is_file(), name
    metrics = json.loads((output / "metrics.json").read_text())
    assert 0 <= metrics["test"]["race"]["accuracy"] <= 1


def test_tracking_disabled_in_the_recipe_logs_nothing(tmp_path, shared_cache, monkeypatch):
    from facelab.recipe import load_recipe
    from facelab.runner import run_recipe

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recipe = load_recipe(RECIPES / "quickstart.yaml", [
        f"data.cache_dir={shared_cache}", "data.dataset.count=200", "data.dataset.size=24",
        "data.detector.size=[24,24]", "train.epochs=1", "evaluate.figures=false",
        "evaluate.timing_batches=1", "tracking.enabled=false"])
    result = run_recipe(recipe)
    assert result.references == {}
    assert not (tmp_path / "mlflow.db").exists()
    assert (result.output_dir / "metrics.json").is_file()
    assert set(result.metrics) == {"val", "test"}
    assert result.final_metrics()["test/race/accuracy"] == result.metrics["test"]["race"].accuracy


def test_observers_hear_the_whole_lifecycle_in_order(tmp_path, shared_cache, monkeypatch):
    """A plugin registered by hand gets run_tags, run_started, epoch_ended per epoch and
    run_finished, with the same Run value; its tags and references reach the result."""
    import facelab
    from facelab.manager import get_plugin_manager
    from facelab.recipe import load_recipe
    from facelab.runner import run_recipe

    calls = []

    class Observer:
        @facelab.hookimpl
        def run_tags(self, recipe):
            return {"observer.tag": recipe.name}

        @facelab.hookimpl
        def run_started(self, run, data):
            calls.append(("started", run.id, run.tags["observer.tag"], data.counts.stages["test"].total))
            return {"observer": "ref-1"}

        @facelab.hookimpl
        def epoch_ended(self, run, epoch, metrics):
            calls.append(("epoch", run.id, epoch, sorted(metrics)))

        @facelab.hookimpl
        def run_finished(self, run, result, outputs):
            calls.append(("finished", run.id, result.run is run, set(outputs.probabilities)))

        @facelab.hookimpl
        def run_failed(self, run, status, error):
            calls.append(("failed", status))

    monkeypatch.chdir(tmp_path)
    manager = get_plugin_manager()
    observer = Observer()
    manager.register(observer, name="test-observer")
    try:
        recipe = load_recipe(RECIPES / "quickstart.yaml", [
            f"data.cache_dir={shared_cache}", "data.dataset.count=200", "data.dataset.size=24",
            "data.detector.size=[24,24]", "train.epochs=2", "evaluate.figures=false",
            "evaluate.timing_batches=1", "tracking.enabled=false"])
        result = run_recipe(recipe, name="custom", tags={"caller.tag": "x"})
    finally:
        manager.unregister(observer)
    run_id = result.run.id
    assert [c[0] for c in calls] == ["started", "epoch", "epoch", "finished"]
    assert calls[0][1:3] == (run_id, "quickstart") and calls[0][3] > 0
    assert [c[2] for c in calls[1:3]] == [1, 2]
    assert "epoch/train/loss" in calls[1][3] and "epoch/val/race/accuracy" in calls[1][3]
    assert calls[3] == ("finished", run_id, True, {"val", "test"})
    assert result.run.name == "custom" and result.run.tags["caller.tag"] == "x"
    assert result.references == {"observer": "ref-1"}
