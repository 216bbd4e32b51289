"""Commands that build no model start without TensorFlow or Keras (each in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import RECIPES

QUICKSTART = str(RECIPES / "quickstart.yaml")
HEAVY = ("tensorflow", "keras")

#: Runs the CLI in-process, then prints which heavy modules it imported (JSON).
PROBE = """
import json, sys
from facelab.cli import cli
try:
    cli(sys.argv[1:], prog_name="facelab")
except SystemExit:
    pass
print("\\nLOADED=" + json.dumps([m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules]))
"""


def loaded(args: list[str], cwd) -> tuple[list[str], str]:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    line = [x for x in done.stdout.splitlines() if x.startswith("LOADED=")]
    assert line, done.stdout + done.stderr
    return json.loads(line[-1][len("LOADED="):]), done.stdout + done.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A folder with an MLflow store holding two finished runs."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("startup")
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("startup")
    ids = []
    for accuracy in (0.5, 0.6):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "test/race/accuracy", accuracy)
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return folder, ids


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["plugins"], ["plugins", "--json", "--all"],
    ["show", QUICKSTART], ["validate", QUICKSTART],
    ["validate", QUICKSTART, "--set", "model.attention.type=cbam"],
    ["run", QUICKSTART, "--dry-run"], ["run", "--help"], ["sweep", "--help"],
    ["nosuchcommand"],
], ids=lambda a: " ".join(a).replace(QUICKSTART, "quickstart"))
def test_commands_that_build_no_model_never_import_tensorflow(args, tmp_path):
    modules, output = loaded(args, tmp_path)
    assert not set(modules) & {*HEAVY, "mlflow"}, (modules, output)


def test_runs_and_compare_read_the_store_without_tensorflow(store):
    folder, ids = store
    for args in (["runs"], ["runs", "--json"], ["compare", *ids]):
        modules, output = loaded(args, folder)
        assert "mlflow" in modules, output  # they did read the store
        assert not set(modules) & set(HEAVY), (args, modules, output)
    modules, output = loaded(["runs", "--json"], folder)
    assert "0.6" in output


def test_run_imports_tensorflow_only_after_validation(tmp_path):
    """A recipe error in `run` is reported before TensorFlow is imported."""
    modules, output = loaded(["run", QUICKSTART, "--set", "model.backbone.type=nope"], tmp_path)
    assert "unknown backbone 'nope'" in output
    assert not set(modules) & set(HEAVY), modules
