"""The ablation sweeps printed in docs/comparing-configurations.md work: every sweep file
validates (a type switch drops the old component's parameters), and the factorial one runs:
every point resolves to the components it names, and its BD-AM point trains end to end, tiny."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import RECIPES, REPO
from facelab.cli import cli

RACE = RECIPES / "race-2025"
MULTITASK = RECIPES / "multitask-2023"
SWEEPS = RECIPES / "sweeps"
TINY = ["data.dataset={type: synthetic, count: 100, size: 48}", "model.backbone.weights=null",
        "model.backbone.variant=b0", "data.detector={type: none, size: [32, 32]}",
        "train.epochs=1", "train.batch_size=16", "evaluate.batch_size=16",
        "evaluate.timing_batches=1", "evaluate.figures=false", "tracking.log_model=false"]


@pytest.fixture
def paper_dirs(workdir, monkeypatch):
    for name in ("UTKFACE_DIR", "GENKI4K_DIR", "IMDB_WIKI_DIR"):
        monkeypatch.setenv(name, str(workdir / name.lower()))


def _sweep_commands_in_the_docs() -> list[str]:
    text = (REPO / "docs" / "comparing-configurations.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("facelab sweep"):
                commands.append(" ".join(line.split("#")[0].split()))
    return [c for c in commands if "recipes/sweeps/" in c]


def test_the_docs_print_the_papers_ablations():
    commands = _sweep_commands_in_the_docs()
    for name in ("race-2025-models.yaml", "race-2025-factorial.yaml",
                 "multitask-2023-configs.yaml"):
        assert any(name in c for c in commands), (name, commands)
    factorial = yaml.safe_load((SWEEPS / "race-2025-factorial.yaml").read_text())
    assert factorial["space"] == {"data.balancer.type": {"choices": ["none", "smote"]},
                                  "model.attention.type": {"choices": ["none", "cbam"]}}
    models = yaml.safe_load((SWEEPS / "race-2025-models.yaml").read_text())["recipe"]
    assert [Path(m).name for m in models] == ["base.yaml", "bd.yaml", "bd-am.yaml"]


@pytest.mark.parametrize("command", _sweep_commands_in_the_docs())
def test_every_ablation_in_the_docs_validates(command, paper_dirs, cli_runner):
    args = command.split()[1:]
    args = [str(REPO / a) if a.startswith("recipes/") else a for a in args]
    result = cli_runner.invoke(cli, [*args, "--dry-run"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "all valid" in result.output


@pytest.mark.parametrize("override", ["model.attention.type=none", "model.attention.type=se",
                                      "data.detector.type=none", "data.balancer.type=none"])
def test_type_switches_on_the_paper_recipe_run_dry(override, paper_dirs, cli_runner):
    result = cli_runner.invoke(cli, ["run", str(RACE / "bd-am.yaml"), "--set", override,
                                     "--dry-run"])
    assert result.exit_code == 0, result.output


def test_the_factorial_race_ablation_runs_tiny(paper_dirs, shared_cache):
    """race-2025-factorial.yaml: four trials under one parent, each with the components it
    names (and none of a replaced one's parameters); the BD-AM point (SMOTE + CBAM) trains end
    to end, the others are checked on the recipes they resolve to (training them would only
    repeat it)."""
    from mlflow.tracking import MlflowClient

    from facelab.manager import get_registry
    from facelab.plugins.mlflow import study as studies
    from facelab.plugins.mlflow import sweep as sweeps
    from facelab.runner import run_recipe

    synthetic_fields = set(get_registry().get("dataset", "synthetic").params.model_fields)
    sweep = sweeps.load_sweep_file(SWEEPS / "race-2025-factorial.yaml",
                                   [f"data.cache_dir={shared_cache}", *TINY])
    ran = {}

    def run(recipe, name, tags, callbacks):
        ran[name] = recipe
        if "balancer=smote,attention=cbam" in name:
            return run_recipe(recipe, name=name, tags=tags, callbacks=callbacks)
        return SimpleNamespace(references={}, final_metrics=lambda: {"test/race/accuracy": 0.5})

    result = studies.run_study(sweep, run=run)
    assert set(ran) == {f"race-2025-bd[balancer={b},attention={a}]"
                        for b in ("none", "smote") for a in ("none", "cbam")}
    assert [t.state for t in result.trials] == ["COMPLETE"] * 4
    for name, recipe in ran.items():
        params = recipe.flat()
        balancer = params["data.balancer.type"]
        assert f"balancer={balancer}" in name and f"attention={params['model.attention.type']}" \
            in name
        assert ("data.balancer.k_neighbors" in params) == (balancer == "smote")
        # the dataset switched type: exactly the synthetic dataset's keys, none of utkface's
        dataset_keys = {k.split(".", 2)[2] for k in params if k.startswith("data.dataset.")}
        assert dataset_keys == {"type", *synthetic_fields}, dataset_keys
    # an absolute URI: MLflow caches one store per URI, so a relative one may point elsewhere
    client = MlflowClient(f"sqlite:///{Path('mlflow.db').absolute()}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (child,) = [r for r in runs if r.data.tags.get("facelab.sweep_role") == "child"]
    (parent,) = [r for r in runs if r.data.tags.get("facelab.sweep_role") == "parent"]
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["data.balancer.type"] == "smote"
    assert child.data.params["model.attention.type"] == "cbam"
    assert 0 <= child.data.metrics["test/race/accuracy"] <= 1
