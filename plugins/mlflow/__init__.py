"""The MLflow plugin: every run tracked in MLflow, and the commands that read the store.

It checks the store answers before a run does any work (``run_preflight``), observes runs
through the lifecycle hooks (``run_started``, ``epoch_ended``, ``run_finished``,
``run_failed``; a store failing mid-run never fails the run: what MLflow misses goes to the
run's ``mlflow_pending/`` folder, for ``facelab sync``), reopens the MLflow run of a resumed
run, finds a run's output folder for ``facelab run --resume`` (``find_run_output``) and adds
``facelab runs``, ``compare``, ``ui``, ``sweep`` and ``sync``. ``facelab sweep`` runs a sweep
file or a ``--grid`` as an Optuna study (``sweep.py``: the sweep file; ``study.py``: the
workers sharing one storage, heartbeats and retries; ``pruning.py``: the per-epoch report;
``comparison.py``: the parent run's figures), each trial a child run of one parent run.
Set ``tracking.enabled: false`` in a recipe, or ``FACELAB_DISABLE_PLUGINS=mlflow``, and runs
still train, evaluate and write their outputs, with nothing sent to MLflow. MLflow is imported
only when a run is tracked or a command reads the store.
"""

from __future__ import annotations

from pathlib import Path

import facelab
from facelab.signals import deferred, raise_if_stopping


def _tracked(run) -> bool:
    return run.recipe.schema.tracking.enabled


@facelab.hookimpl
def run_preflight(recipe):
    """Before any work: the tracking store must answer (within a few seconds), else one line
    naming it and exit 2."""
    if recipe.schema.tracking.enabled:
        from facelab.plugins.mlflow import tracking

        tracking.quiet_mlflow()  # bounded HTTP retries from here on
        tracking.check_store(recipe.schema.tracking.uri)


def _mlflow_tags(run) -> dict[str, str]:
    from facelab.plugins.mlflow import tracking

    tags = {**run.tags, tracking.RUN_ID_TAG: run.id,
            tracking.OUTPUT_DIR_TAG: str(Path(run.output_dir).absolute())}
    if "facelab.git_commit" in tags:
        tags["mlflow.source.git.commit"] = tags["facelab.git_commit"]
    return tags


def _offline(run, error, where, mlflow_run_id, params=None, datasets=None) -> None:
    """Tracking failed: forget the MLflow run here and keep the rest in the output folder.
    User errors (FacelabError) and interruptions are not tracking failures: they propagate."""
    from facelab.errors import FacelabError
    from facelab.plugins.mlflow import pending, tracking

    if isinstance(error, FacelabError):
        raise error
    tracking.detach_active_run(mlflow_run_id)
    pending.go_offline(run, error, where, uri=tracking.tracking_uri(
        run.recipe.schema.tracking.uri), mlflow_run_id=mlflow_run_id, tags=_mlflow_tags(run),
        params=params, datasets=datasets)


@facelab.hookimpl
def run_started(run, data):
    if not _tracked(run):
        return None
    from facelab.plugins.mlflow import pending, tracking

    if pending.offline(run.output_dir):  # a resumed run whose tracking went offline before
        return {"MLflow": f"offline: `facelab sync {run.output_dir}` uploads it"}
    settings = run.recipe.schema.tracking
    started_id, params = None, None
    try:
        if run.resumed_from_epoch is not None:
            reopened = tracking.reopen(run.id, run.resumed_from_epoch, settings.uri,
                                       settings.experiment, settings.system_metrics)
            if reopened is not None:  # params and datasets were logged when it started
                return {"MLflow run": reopened.info.run_id}
            # it stopped before its MLflow run started (or was not tracked): start one now
        params = {k: tracking._param_text(v) for k, v in run.recipe.flat().items()}
        started = tracking.start(run.name, _mlflow_tags(run), run.recipe.schema.description,
                                 settings.uri, settings.experiment, settings.system_metrics)
        started_id = started.info.run_id
        # a failure from here on reaches run_failed, which ends this MLflow run
        tracking.log_params(run.recipe.flat())
        params = None
        tracking.log_datasets(tracking.split_datasets(run.recipe, data))
        return tracking.references(started, settings.uri)
    except Exception as exc:
        datasets = None
        try:
            datasets = tracking.split_frames(run.recipe, data)
        except Exception:
            pass
        _offline(run, exc, "the run's start", started_id, params, datasets)
        return {"MLflow": f"offline: `facelab sync {run.output_dir}` uploads it"}


@facelab.hookimpl
def epoch_ended(run, epoch, metrics):
    if not _tracked(run):
        return
    from facelab.plugins.mlflow import pending, tracking

    if not pending.offline(run.output_dir):
        try:
            with deferred():  # Ctrl-C never cuts an MLflow write in half (a locked store)
                tracking.log_metrics(metrics, step=epoch)
            return
        except Exception as exc:
            _offline(run, exc, f"epoch {epoch}", tracking.active_run_id())
    pending.add_metrics(run.output_dir, epoch, metrics)


@facelab.hookimpl(trylast=True)
def run_finished(run, result, outputs):
    """Last of the observers, so the files others wrote into the output folder are logged."""
    if not _tracked(run):
        return
    from facelab.plugins.mlflow import pending, tracking

    from facelab.modelspec import FILE

    if not pending.offline(run.output_dir):
        run_id = None
        try:
            # Each MLflow write runs with Ctrl-C and SIGTERM deferred, so none is cut in half
            # (a half-done sqlite commit locks the store); a signal is acted on between them,
            # before FINISHED, and run_failed then ends the run KILLED with its artifacts.
            with deferred():
                run_id = tracking.find_run(run.id)
            # a failure here reaches run_failed, which ends the still-running MLflow run FAILED
            model_id = None
            if run.recipe.schema.tracking.log_model:
                with deferred():
                    model_id = tracking.log_model(outputs.model, run.recipe, outputs.data,
                                                  run.output_dir / FILE).model_id
            with deferred():
                tracking.log_final_metrics(result,
                                           tracking.split_datasets(run.recipe, outputs.data),
                                           model_id)
            with deferred():
                tracking.log_tables(result)
            raise_if_stopping()  # a stop whose exception was swallowed: not FINISHED
            with deferred():
                tracking.finish(run_id, "FINISHED", None, run.output_dir)
            return
        except Exception as exc:
            _offline(run, exc, "the run's end", run_id or tracking.active_run_id())
    pending.finish(run, result, outputs)


@facelab.hookimpl(trylast=True)
def run_failed(run, status, error):
    if not _tracked(run):
        return
    from facelab.plugins.mlflow import pending, tracking

    if not pending.offline(run.output_dir):
        run_id = None
        try:
            run_id = tracking.find_run(run.id)
            if run_id is None:  # it failed before its MLflow run started, or that run has ended
                return
            tracking.finish(run_id, status, describe(status, error), run.output_dir)
            return
        except Exception as exc:
            _offline(run, exc, "the run's end", run_id or tracking.active_run_id())
    pending.set_status(run.output_dir, status, describe(status, error))


def describe(status: str, error: BaseException) -> str:
    """The ``facelab.error`` tag: what ended the run."""
    from facelab.errors import RunStopped

    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, RunStopped):  # stopped on purpose (a pruner): it says why
        return str(error)
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

    for command in (commands.sweep, commands.runs, commands.compare, commands.ui,
                    commands.sync):
        cli.add_command(command)
