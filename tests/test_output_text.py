"""Output shows what was meant: no literal rich markup, user text with brackets verbatim."""

from __future__ import annotations

from conftest import RECIPES
from facelab.cli import cli


def test_user_text_with_brackets_is_shown_verbatim_in_errors(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["validate", str(RECIPES / "quickstart.yaml"),
                                     "--set", "model.backbone.type=x[b]y"])
    assert result.exit_code == 2
    assert "'x[b]y'" in result.output and result.output.count("\n") == 1


def test_run_states_are_styled_not_printed_as_markup(cli_runner, workdir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.create_experiment("states")
    for status, name in (("KILLED", "killed[run]"), ("FINISHED", "done")):
        run = client.create_run(experiment, run_name=name)
        client.set_terminated(run.info.run_id, status)
    result = cli_runner.invoke(cli, ["runs"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "KILLED" in result.output and "killed[run]" in result.output
    assert "[red]" not in result.output and "[/" not in result.output
