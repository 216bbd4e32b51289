"""Runs a recipe end to end and tells the observers about it through the lifecycle hooks.

The runner owns the :class:`facelab.run.Run` value and passes it to every hook; it knows no
tracking backend, report or figure by name. Order: prepare the data (errors here come before
any run exists) -> ``run_started`` -> train (``epoch_ended`` each epoch) -> evaluate -> write the
core's outputs -> ``run_finished``; on an exception, Ctrl-C or SIGTERM -> ``run_failed``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.context import QuietProgress
from facelab.errors import RunTerminated
from facelab.modelspec import FILE as MODEL_SPEC_FILE
from facelab.modelspec import model_spec
from facelab.recipe import Recipe, check_keras_values
from facelab.results import Efficiency, RunResult, metrics_to_json
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


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        f.write(text)
    os.replace(f.name, path)


def write_json(path: Path, value) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(value, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def run_recipe(recipe: Recipe, *, name: str | None = None, tags: dict[str, str] | None = None,
               progress=None, callbacks=(), hooks=None) -> RunResult:
    """Run a validated recipe.

    ``name`` (default: ``tracking.run_name``, else the recipe name with its overrides,
    ``quickstart[attention=cbam]``) and ``tags`` are given to
    the run (a sweep names its children); ``callbacks`` are extra Keras callbacks (progress
    bars); ``hooks`` is the plugin manager's hook relay (default: the loaded plugins').
    """
    from facelab import pipeline

    if hooks is None:
        from facelab.manager import get_plugin_manager

        hooks = get_plugin_manager().hook
    progress = progress or QuietProgress()
    check_keras_values(recipe)  # a bad optimizer value fails now, not after data preparation
    set_seed(recipe.schema.seed)
    ctx = pipeline.make_context(recipe, progress)
    data = pipeline.prepare_data(recipe, ctx)
    name = name or recipe.schema.tracking.run_name or run_label(recipe.name, recipe.overrides)
    run = Run(id=new_run_id(), name=name,
              output_dir=new_output_dir(recipe), recipe=recipe,
              tags=_run_tags(hooks, recipe, tags))
    with sigterm_raises():
        try:
            references: dict[str, str] = {}
            with progress.phase("starting the run"):
                for answer in hooks.run_started(run=run, data=data):
                    references.update(answer or {})
            result, outputs = _train_and_evaluate(run, data, ctx, callbacks, hooks, references)
            with progress.phase("reporting (tables, figures, tracking)"):
                hooks.run_finished(run=run, result=result, outputs=outputs)
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, (KeyboardInterrupt, RunTerminated)) else "FAILED"
            try:
                hooks.run_failed(run=run, status=status, error=exc)
            except Exception as hook_error:  # keep the run's own error first
                exc.add_note(f"(while reporting this failure: {type(hook_error).__name__}: "
                             f"{hook_error})")
            raise
    return result


def _run_tags(hooks, recipe: Recipe, extra: dict[str, str] | None) -> dict[str, str]:
    """Provenance, then the plugins' tags, then the caller's, then the recipe's own."""
    tags = provenance_tags(recipe)
    for answer in reversed(hooks.run_tags(recipe=recipe)):
        tags.update(answer or {})
    tags.update(extra or {})
    tags.update(recipe.schema.tracking.tags)
    return tags


def _train_and_evaluate(run: Run, data, ctx, callbacks, hooks, references: dict[str, str]
                        ) -> tuple[RunResult, RunOutputs]:
    from facelab import pipeline
    from facelab.callbacks import HookCallback

    recipe, output = run.recipe, run.output_dir
    _write_recipe(recipe, output)
    write_json(output / "data_counts.json", data.counts.to_json())
    write_json(output / MODEL_SPEC_FILE,
               model_spec(recipe, data.tasks, data.images.shape[1:]).to_json())
    with ctx.progress.phase("building the model"):
        sets = pipeline.datasets(recipe, data, ctx)
        model = pipeline.compile_model(recipe, data.images.shape[1:], data.tasks)
        _write_summary(model, output)
    epochs = HookCallback(hooks, run, recipe.tasks)
    history, train_seconds = pipeline.train(recipe, model, sets, [*callbacks, epochs])
    write_json(output / "history.json", history)
    with ctx.progress.phase("evaluating"):
        probs = {split: pipeline.predict(model, sets[split])
                 for split in ("val", "test") if split in sets}
        metrics = {split: pipeline.evaluate_split(recipe, data, split, p)
                   for split, p in probs.items()}
        efficiency = _efficiency(recipe, model, data, train_seconds)
    write_json(output / "metrics.json", metrics_to_json(metrics))
    write_json(output / "efficiency.json", efficiency.to_json())
    result = RunResult(run, metrics, data.counts, efficiency, history, references)
    return result, RunOutputs(model, data, probs)


def _efficiency(recipe: Recipe, model, data, train_seconds: float) -> Efficiency:
    from facelab.evaluate import device_name, inference_speed
    from facelab.model import parameter_counts, ram_mb

    counts = parameter_counts(model)
    size = recipe.schema.evaluate.batch_size
    plan = data.example_plan()
    rows = np.resize(np.arange(len(plan)), size)
    speed = inference_speed(model, plan.materialize(data.images, rows),
                            recipe.schema.evaluate.timing_batches)
    return Efficiency(device=device_name(), total_params=counts["total"],
                      trainable_params=counts["trainable"],
                      non_trainable_params=counts["non_trainable"],
                      ram_mb=ram_mb(counts["total"]), train_seconds=train_seconds,
                      epochs=recipe.schema.train.epochs,
                      train_samples=len(data.splits.plans["train"]), **speed)


def _write_recipe(recipe: Recipe, output: Path) -> None:
    write_text(output / "recipe.yaml", recipe.to_yaml())
    if recipe.source_text:
        write_text(output / "recipe.original.yaml", recipe.source_text)
    write_text(output / "overrides.txt", "".join(f"{o}\n" for o in recipe.overrides))


def _write_summary(model, output: Path) -> None:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    write_text(output / "model_summary.txt", buffer.getvalue())


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`RunTerminated` (main thread only; elsewhere a
    no-op), so ``kill PID`` ends a run like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunTerminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
