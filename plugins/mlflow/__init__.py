"""The MLflow plugin: every run tracked in MLflow, and the commands that read the store.

It observes runs through the lifecycle hooks (``run_started``, ``epoch_ended``,
``run_finished``, ``run_failed``), reopens the MLflow run of a resumed run, finds a run's output
folder for ``facelab run --resume`` (``find_run_output``) and adds ``facelab runs``,
``compare``, ``ui`` and ``sweep``.
Set ``tracking.enabled: false`` in a recipe, or ``FACELAB_DISABLE_PLUGINS=mlflow``, and runs
still train, evaluate and write their outputs, with nothing sent to MLflow. MLflow is imported
only when a run is tracked or a command reads the store.
"""

from __future__ import annotations

from pathlib import Path

import facelab


def _tracked(run) -> bool:
    return run.recipe.schema.tracking.enabled


@facelab.hookimpl
def run_started(run, data):
    if not _tracked(run):
        return None
    from facelab.plugins.mlflow import tracking

    settings = run.recipe.schema.tracking
    if run.resumed_from_epoch is not None:
        reopened = tracking.reopen(run.id, run.resumed_from_epoch, settings.uri,
                                   settings.experiment, settings.system_metrics)
        if reopened is not None:  # params and datasets were logged when it started
            return {"MLflow run": reopened.info.run_id}
        # it stopped before its MLflow run started (or was not tracked): start one now
    tags = {**run.tags, tracking.RUN_ID_TAG: run.id,
            tracking.OUTPUT_DIR_TAG: str(Path(run.output_dir).absolute())}
    if "facelab.git_commit" in tags:
        tags["mlflow.source.git.commit"] = tags["facelab.git_commit"]
    started = tracking.start(run.name, tags, run.recipe.schema.description, settings.uri,
                             settings.experiment, settings.system_metrics)
    # a failure from here on reaches run_failed, which ends this MLflow run
    tracking.log_params(run.recipe.flat())
    tracking.log_datasets(tracking.split_datasets(run.recipe, data))
    return tracking.references(started, settings.uri)


@facelab.hookimpl
def epoch_ended(run, epoch, metrics):
    if _tracked(run):
        from facelab.plugins.mlflow import tracking

        tracking.log_metrics(metrics, step=epoch)


@facelab.hookimpl(trylast=True)
def run_finished(run, result, outputs):
    """Last of the observers, so the files others wrote into the output folder are logged."""
    if not _tracked(run):
        return
    from facelab.plugins.mlflow import tracking

    from facelab.modelspec import FILE

    run_id = tracking.find_run(run.id)
    # a failure here reaches run_failed, which ends the still-running MLflow run FAILED
    model_id = None
    if run.recipe.schema.tracking.log_model:
        model_id = tracking.log_model(outputs.model, run.recipe, outputs.data,
                                      run.output_dir / FILE).model_id
    tracking.log_final_metrics(result, tracking.split_datasets(run.recipe, outputs.data),
                               model_id)
    tracking.log_tables(result)
    tracking.finish(run_id, "FINISHED", None, run.output_dir)


@facelab.hookimpl(trylast=True)
def run_failed(run, status, error):
    if not _tracked(run):
        return
    from facelab.plugins.mlflow import tracking

    run_id = tracking.find_run(run.id)
    if run_id is None:  # it failed before its MLflow run started, or that run has ended
        return
    tracking.finish(run_id, status, describe(status, error), run.output_dir)


def describe(status: str, error: BaseException) -> str:
    """The ``facelab.error`` tag: what ended the run."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if status == "KILLED":
        return "terminated (SIGTERM)"
    return f"{type(error).__name__}: {error}"


@facelab.hookimpl
def find_run_output(run_ref):
    """The output folder of an MLflow run id (or facelab's run id) in the tracking store
    (``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``), for ``facelab run --resume``."""
    from facelab.plugins.mlflow import tracking

    return tracking.find_output_dir(run_ref)


@facelab.hookimpl
def register_commands(cli):
    from facelab.plugins.mlflow import commands

    for command in (commands.sweep, commands.runs, commands.compare, commands.ui):
        cli.add_command(command)
