"""Runs a recipe end to end and tells the observers about it through the lifecycle hooks.

The runner owns the :class:`facelab.run.Run` value and passes it to every hook; it knows no
tracking backend, report or figure by name. Order: ``run_preflight`` -> prepare the data
(errors here come before any run exists) -> ``run.json`` -> ``run_started`` -> train
(``epoch_ended`` each epoch, then a checkpoint) -> evaluate -> write the core's outputs ->
``run_finished``; on an exception, Ctrl-C or SIGTERM -> ``run_failed``. :func:`resume_run`
continues a stopped run from its checkpoint.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab import checkpoints, distribute, signals
from facelab.checkpoints import Checkpoint, StoredRun
from facelab.context import QuietProgress
from facelab.errors import RunStopped, RunTerminated
from facelab.files import write_json, write_text
from facelab.modelspec import FILE as MODEL_SPEC_FILE
from facelab.modelspec import model_spec
from facelab.fairness import split_fairness
from facelab.recipe import Recipe, check_keras_values
from facelab.results import Efficiency, RunResult, fairness_to_json, metrics_to_json
from facelab.signals import stop_on_signals
from facelab.run import Run, new_output_dir, new_run_id, provenance_tags, run_label


@dataclass(frozen=True)
class RunOutputs:
    """What observers get besides the result: the trained model, the prepared data, and the
    predicted probabilities (split -> task -> ``(n, classes)``) in the split plans' order."""

    model: Any
    data: Any  # facelab.pipeline.PreparedData
    probabilities: dict[str, dict[str, np.ndarray]]


def set_seed(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def run_recipe(recipe: Recipe, *, name: str | None = None, tags: dict[str, str] | None = None,
               progress=None, callbacks=(), hooks=None) -> RunResult:
    """Run a validated recipe.

    ``name`` (default: ``tracking.run_name``, else the recipe name with its overrides,
    ``quickstart[attention=cbam]``) and ``tags`` are given to
    the run (a sweep names its children); ``callbacks`` are extra Keras callbacks (progress
    bars); ``hooks`` is the plugin manager's hook relay (default: the loaded plugins').
    """
    from facelab import pipeline

    hooks = hooks if hooks is not None else _plugin_hooks()
    progress = progress or QuietProgress()
    distribute.prepare(recipe)  # logical CPUs: before anything starts TensorFlow's devices
    check_keras_values(recipe)  # a bad optimizer value fails now, not after data preparation
    hooks.run_preflight(recipe=recipe)  # e.g. the tracking store answers, before any work
    with stop_on_signals():  # from here on Ctrl-C / SIGTERM: one stop, its cleanup uncut
        set_seed(recipe.schema.seed)
        ctx = pipeline.make_context(recipe, progress)
        data = _prepare_checked(recipe, ctx)
        signals.raise_if_stopping()  # before any run exists
        name = name or recipe.schema.tracking.run_name or run_label(recipe.name,
                                                                    recipe.overrides)
        run = Run(id=new_run_id(), name=name,
                  output_dir=new_output_dir(recipe), recipe=recipe,
                  tags=collect_tags(hooks, recipe, tags))
        with checkpoints.hold(run.output_dir):
            return _execute(run, data, ctx, callbacks, hooks, None)


def _prepare_checked(recipe: Recipe, ctx):
    """The model preflight (:mod:`facelab.preflight`) and the data: the preflight first when
    every dataset declares its tasks (no data read), else right after the data is prepared;
    either way before any run exists."""
    from facelab import pipeline, preflight

    early = all(spec.component.tasks is not None for spec in recipe.datasets.values())
    if early:
        shape = recipe.detector.build(ctx).output_shape
        with ctx.progress.phase("checking the model and batch sizes"):
            preflight.check(recipe, shape, pipeline.recipe_tasks(recipe, ctx))
    data = pipeline.prepare_data(recipe, ctx)
    if not early:
        with ctx.progress.phase("checking the model and batch sizes"):
            preflight.check(recipe, data.images.shape[1:], data.tasks)
    distribute.check_batches(recipe, {s: len(p) for s, p in data.splits.plans.items()})
    return data


def resume_run(stored: StoredRun, *, progress=None, callbacks=(), hooks=None) -> RunResult:
    """Continue the stopped run ``stored`` (:func:`facelab.checkpoints.read_run`) in its output
    folder, under its id, name, tags and recipe, from its newest intact checkpoint (weights,
    optimizer, history, random state), or from the start when it has none. Observers see a
    ``Run`` with ``resumed_from_epoch`` set. A finished run, or one another process still
    runs, is refused with a :class:`facelab.errors.FacelabError`."""
    from facelab import pipeline

    hooks = hooks if hooks is not None else _plugin_hooks()
    progress = progress or QuietProgress()
    recipe = stored.recipe
    with stop_on_signals(), checkpoints.hold(stored.folder):
        checkpoints.check_resumable(checkpoints.read_run(stored.folder))  # now that we hold it
        distribute.prepare(recipe)
        check_keras_values(recipe)
        hooks.run_preflight(recipe=recipe)
        set_seed(recipe.schema.seed)
        ctx = pipeline.make_context(recipe, progress)
        data = _prepare_checked(recipe, ctx)
        checkpoint = checkpoints.load(stored.folder)
        done = checkpoint.epoch if checkpoint is not None else 0
        progress.log(f"resuming after epoch {done} of {recipe.schema.train.epochs}: "
                     f"run {stored.id}")
        run = Run(id=stored.id, name=stored.name, output_dir=stored.folder, recipe=recipe,
                  tags=stored.tags, started=stored.started, resumed_from_epoch=done)
        return _execute(run, data, ctx, callbacks, hooks, checkpoint)


def _plugin_hooks():
    from facelab.manager import get_plugin_manager

    return get_plugin_manager().hook


def _execute(run: Run, data, ctx, callbacks, hooks, checkpoint: Checkpoint | None) -> RunResult:
    """``run_started`` -> train and evaluate -> ``run_finished``, or ``run_failed``; the run's
    status is kept in ``run.json``."""
    checkpoints.write_run_file(run)
    progress = ctx.progress
    with stop_on_signals():
        try:
            references: dict[str, str] = {}
            with progress.phase("starting the run"):
                for answer in hooks.run_started(run=run, data=data):
                    references.update(answer or {})
            signals.raise_if_stopping()
            result, outputs = _train_and_evaluate(run, data, ctx, callbacks, hooks, references,
                                                  checkpoint)
            signals.raise_if_stopping()
            with progress.phase("reporting (tables, figures, tracking)"):
                hooks.run_finished(run=run, result=result, outputs=outputs)
            signals.raise_if_stopping()
        except BaseException as exc:
            stopped = (KeyboardInterrupt, RunTerminated, RunStopped)
            status = "KILLED" if isinstance(exc, stopped) else "FAILED"
            # further Ctrl-C / SIGTERM wait until the failure is recorded and reported (the
            # tracking run ended with its artifacts), then are delivered
            with signals.deferred():
                try:
                    checkpoints.set_status(run.output_dir, status)
                except Exception as write_error:  # keep the run's own error first
                    exc.add_note(f"(while recording its status: {write_error})")
                try:
                    hooks.run_failed(run=run, status=status, error=exc)
                except Exception as hook_error:  # keep the run's own error first
                    exc.add_note(f"(while reporting this failure: {type(hook_error).__name__}: "
                                 f"{hook_error})")
            raise
        with signals.deferred():
            checkpoints.set_status(run.output_dir, checkpoints.FINISHED)
    return result


def collect_tags(hooks, recipe: Recipe, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A run's tags: provenance, then the plugins' (``run_tags``), then the caller's, then the
    recipe's own."""
    tags = provenance_tags(recipe)
    for answer in reversed(hooks.run_tags(recipe=recipe)):
        tags.update(answer or {})
    tags.update(extra or {})
    tags.update(recipe.schema.tracking.tags)
    return tags


def _train_and_evaluate(run: Run, data, ctx, callbacks, hooks, references: dict[str, str],
                        checkpoint: Checkpoint | None) -> tuple[RunResult, RunOutputs]:
    from facelab import pipeline
    from facelab.callbacks import CheckpointCallback, HookCallback

    recipe, output = run.recipe, run.output_dir
    _write_recipe(recipe, output)
    write_json(output / "data_counts.json", data.counts.to_json())
    write_json(output / MODEL_SPEC_FILE,
               model_spec(recipe, data.tasks, data.images.shape[1:]).to_json())
    strategy = distribute.strategy(recipe)
    with ctx.progress.phase("building the model"), strategy.scope():
        augment = pipeline.augmentations(recipe, ctx)
        sets = pipeline.datasets(recipe, data, ctx, augment=augment,
                                 first_epoch=run.resumed_from_epoch or 0)
        models = pipeline.build_models(recipe, data.images.shape[1:], data.tasks,
                                       augment=augment)
        _write_summary(models.inference, output)
        if checkpoint is not None:
            checkpoints.restore(models.training, checkpoint, augment)
    if recipe.schema.train.distribute.type != "none":
        ctx.progress.log(f"training on {distribute.describe(strategy)}, global batch "
                         f"{recipe.schema.train.batch_size}")
    keep = [CheckpointCallback(output, augment, checkpoint)] \
        if recipe.schema.train.checkpoints else []
    epochs = HookCallback(hooks, run, recipe.tasks)
    steps = pipeline.steps_per_epoch(recipe, data)
    history, train_seconds = _train(recipe, models.training, sets, [*callbacks, epochs], keep,
                                    checkpoint, output, steps)
    model = distribute.single_device(models.inference, recipe)
    write_json(output / "history.json", history)
    with ctx.progress.phase("evaluating"):
        probs = {split: pipeline.predict(model, sets[split])
                 for split in ("val", "test") if split in sets}
        metrics = {split: pipeline.evaluate_split(recipe, data, split, p)
                   for split, p in probs.items()}
        efficiency = _efficiency(recipe, model, data, train_seconds,
                                 strategy.num_replicas_in_sync, len(history.get("loss", [])),
                                 steps)
        fairness = {split: split_fairness(recipe, data, split, p) for split, p in probs.items()}
    write_json(output / "metrics.json", metrics_to_json(metrics))
    write_json(output / "efficiency.json", efficiency.to_json())
    write_json(output / "fairness.json", fairness_to_json(fairness))
    result = RunResult(run, metrics, data.counts, efficiency, history, references, fairness)
    return result, RunOutputs(model, data, probs)


def _train(recipe: Recipe, model, sets: dict, callbacks: list, after: list,
           checkpoint: Checkpoint | None, output: Path, steps: int) -> tuple[dict, float]:
    """Fit, or, for a resumed run, fit the epochs its checkpoint had not done; returns the whole
    history and the training seconds, those before the interruption included."""
    from facelab import pipeline

    if checkpoint is None:
        return pipeline.train(recipe, model, sets, callbacks, steps=steps, after=after)
    history = {k: list(v) for k, v in checkpoint.history.items()}
    seconds = checkpoint.train_seconds
    train = recipe.schema.train
    if not checkpoint.stopped and checkpoint.epoch < train.epochs:
        more, more_seconds = pipeline.train(
            recipe, model, sets, callbacks, steps=steps, initial_epoch=checkpoint.epoch,
            after=after,
            early_stopping=(checkpoint.best_val_loss, checkpoint.epoch - (
                checkpoint.best_epoch or checkpoint.epoch)))
        for key, values in more.items():
            history.setdefault(key, []).extend(values)
        seconds += more_seconds
    if train.early_stopping and "val" in sets:
        # early stopping ends with the weights of the lowest validation loss; the best
        # checkpoint holds them when that epoch came before the interruption
        best = checkpoints.load_best(output)
        if best is not None:
            model.load_weights(best.model)
    return history, seconds


def _efficiency(recipe: Recipe, model, data, train_seconds: float, replicas: int,
                epochs: int, steps_per_epoch: int) -> Efficiency:
    from facelab.evaluate import device_name, inference_speed
    from facelab.inputs import rows_read
    from facelab.model import parameter_counts, ram_mb

    counts = parameter_counts(model)
    size = recipe.schema.evaluate.batch_size
    train_plan = data.splits.plans["train"]
    plan = data.example_plan()
    rows = np.resize(np.arange(len(plan)), size)
    speed = inference_speed(model, plan.materialize(data.images, rows),
                            recipe.schema.evaluate.timing_batches)
    return Efficiency(device=device_name(), total_params=counts["total"],
                      trainable_params=counts["trainable"],
                      non_trainable_params=counts["non_trainable"],
                      ram_mb=ram_mb(counts["total"]), train_seconds=train_seconds,
                      epochs=epochs, train_samples=len(train_plan), replicas=replicas,
                      train_images=rows_read(len(train_plan), recipe.schema.train.batch_size,
                                             epochs * steps_per_epoch),
                      **speed)


def _write_recipe(recipe: Recipe, output: Path) -> None:
    write_text(output / "recipe.yaml", recipe.to_yaml())
    if recipe.source_text:
        write_text(output / "recipe.original.yaml", recipe.source_text)
    write_text(output / "overrides.txt", "".join(f"{o}\n" for o in recipe.overrides))


def _write_summary(model, output: Path) -> None:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    write_text(output / "model_summary.txt", buffer.getvalue())
