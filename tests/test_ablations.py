"""The ablation sweeps printed in docs/comparing-configurations.md work: every grid validates
(a type switch drops the old component's parameters), and one runs end to end, tiny."""

from __future__ import annotations

import re

import pytest

from conftest import RECIPES, REPO
from facelab.cli import cli

RACE = RECIPES / "race-2025"
MULTITASK = RECIPES / "multitask-2023"
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
    return [c for c in commands if "recipes/race-2025" in c or "recipes/multitask-2023" in c]


def test_the_docs_print_both_ablations():
    commands = _sweep_commands_in_the_docs()
    assert any("--grid data.balancer.type=none,smote" in c and
               "--grid model.attention.type=none,cbam" in c for c in commands), commands
    assert any("base.yaml" in c and "bd-am.yaml" in c for c in commands), commands


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


def test_the_factorial_race_ablation_runs_tiny(paper_dirs, cli_runner, shared_cache):
    """bd.yaml x {none, smote} x {none, cbam}: four children under one parent, all finished,
    each with the component it was given (and none of the replaced one's parameters)."""
    from mlflow.tracking import MlflowClient

    from facelab.manager import get_registry

    synthetic_fields = set(get_registry().get("dataset", "synthetic").params.model_fields)
    args = ["sweep", str(RACE / "bd.yaml"), "--grid", "data.balancer.type=none,smote",
            "--grid", "model.attention.type=none,cbam", "--set", f"data.cache_dir={shared_cache}"]
    for item in TINY:
        args += ["--set", item]
    result = cli_runner.invoke(cli, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    client = MlflowClient("sqlite:///mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("facelab.sweep_role") == "child"}
    assert set(children) == {f"race-2025-bd[balancer.type={b},attention.type={a}]".replace(
        ".type", "") for b in ("none", "smote") for a in ("none", "cbam")}
    for name, run in children.items():
        assert run.info.status == "FINISHED", name
        balancer = run.data.params["data.balancer.type"]
        assert f"balancer={balancer}" in name
        assert ("data.balancer.k_neighbors" in run.data.params) == (balancer == "smote")
        # the dataset switched type: exactly the synthetic dataset's keys, none of utkface's
        dataset_keys = {k.split(".", 2)[2] for k in run.data.params
                        if k.startswith("data.dataset.")}
        assert dataset_keys == {"type", *synthetic_fields}, dataset_keys
        assert 0 <= run.data.metrics["test/race/accuracy"] <= 1
