"""The plugin hooks: registration hooks (one per component kind), lifecycle hooks that observers
implement, and ``register_commands`` for plugin-owned CLI commands.

**Registration hooks.** Each is called once, when facelab first needs its registries. It receives a ``register``
callback and calls it once per component it provides::

    @facelab.hookimpl
    def register_backbones(register):
        register("tiny-cnn", build_tiny_cnn, TinyCnnParams)

``register(name, factory, params, doc=None)``:

- ``name``: the ``type`` a recipe uses. Lower case, words joined by ``-``.
- ``factory``: a callable; what it receives and returns depends on the kind (below).
- ``params``: a :class:`facelab.Params` subclass. The recipe's keys other than ``type`` are
  validated against it before any work starts; unknown keys are rejected.
- ``doc``: the reference documentation; defaults to the factory's docstring, whose first line is
  the one-line summary shown by ``facelab plugins``.
- ``tasks`` (datasets only, keyword): ``tasks(params) -> {name: Task}``, the tasks the dataset
  provides, known without loading data, so ``facelab summary`` can build the model.
- ``columns`` (datasets only, keyword): the extra columns of its sample table (a list, or
  ``columns(params) -> [name, ...]``), so ``facelab validate`` can check ``evaluate.groups``.
- ``licence`` and ``citation`` (datasets only, keyword): the data's terms of use and how to cite
  it (a text, or ``f(params) -> text or None``); every run's ``model_card.md`` shows them, and
  says "not declared" when a dataset gives none.

Registering a name twice (in one plugin or across plugins) is an error naming both origins.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("facelab")


@hookspec
def register_datasets(register):
    """Register datasets: ``factory(params, ctx) -> facelab.data.SampleTable``.

    ``ctx`` is a :class:`facelab.context.BuildContext` (cache folder, seed, progress). The table has
    one row per image: ``path``, ``source`` and one integer column per task, ``-1`` where the
    source has no label. Rows skipped while loading are counted in ``SampleTable.skipped``.
    """


@hookspec
def register_detectors(register):
    """Register face detectors: ``factory(params, ctx) -> facelab.data.Detector``.

    The detector turns decoded RGB uint8 images into fixed-size crops (``output_shape``), or drops
    them. The core reads the files, groups same-size images into batches, caches every crop on
    disk keyed by file content and ``cache_key()``, and counts the outcomes.

    Optionally, ``detect_all(image) -> [Detection]`` returns every face in one image, each cropped
    exactly as ``detect`` crops, with ``Detection.box`` (x, y, width, height) and
    ``Detection.confidence`` where known; ``facelab predict`` uses it, else ``detect([image])``.
    """


@hookspec
def register_splits(register):
    """Register split protocols: ``factory(params, ctx) -> facelab.split.Splitter``.

    ``Splitter.split(request)`` receives a :class:`facelab.split.SplitRequest` (the kept sample
    table, the uint8 crops, the tasks, the balancer, the seed) and returns
    :class:`facelab.split.Splits`: a :class:`facelab.data.BalancePlan` per split (train, val,
    test) and the training rows before balancing. The split decides when balancing happens, so
    a protocol may balance before carving validation. Parameters should subclass
    :class:`facelab.split.SplitParams` (``test``, ``val``, ``train``, ``stratify``, ``seed``,
    ``by_source``).
    """


@hookspec
def register_balancers(register):
    """Register class balancers: ``factory(params, ctx) -> facelab.data.Balancer``.

    ``Balancer.plan(features, labels, seed)`` returns a :class:`facelab.data.BalancePlan`: rows
    ``base + step * (neighbour - base)``, synthesised lazily, batch by batch, by the input pipeline.
    """


@hookspec
def register_augmentations(register):
    """Register augmentations: ``factory(params, ctx) -> keras.layers.Layer``.

    The layer is applied on the fly to float32 training batches with values in 0-255, shape
    ``(batch, height, width, channels)``. It is never applied to validation or test data.
    """


@hookspec
def register_backbones(register):
    """Register backbones: ``factory(params, input_shape) -> keras.Model``.

    The model maps float32 images in 0-255 of ``input_shape`` (H, W, C) to features: a 4-D map
    (attention can follow) or a 2-D vector. It does its own input scaling.
    """


@hookspec
def register_attentions(register):
    """Register attention modules: ``factory(params) -> keras.layers.Layer | None``.

    The layer takes the backbone's 4-D feature map and returns a map of the same shape.
    ``None`` means identity.
    """


@hookspec
def register_heads(register):
    """Register task heads: ``factory(params, task) -> callable(features) -> probabilities``.

    ``task`` is a :class:`facelab.data.Task`. The callable is applied to the (attended) features
    and returns a softmax tensor of shape ``(batch, len(task.classes))``.
    """


@hookspec
def register_losses(register):
    """Register losses: ``factory(params, tasks) -> facelab.data.LossSpec``.

    ``tasks`` maps each trained task's name to its :class:`facelab.data.Task`. Labels of ``-1``
    (not labelled for that task) must add zero loss and zero gradient.
    """


# --------------------------------------------------------------------------------------------
# Lifecycle hooks: observers (tracking, reports, figures) hear about a run through these. The
# runner calls them with a ``facelab.run.Run`` (id, name, output folder, tags, recipe); nothing
# about a run lives in module state. A hook that raises fails the run (``run_failed`` follows).
# --------------------------------------------------------------------------------------------

@hookspec
def run_preflight(recipe):
    """Check, before any work (before data preparation, for a fresh and a resumed run), what
    the run needs from outside, e.g. that the tracking store answers.

    Raise a :class:`facelab.errors.FacelabError` (one line, exit 2) to refuse the run; return
    nothing. Keep it short: bound every network wait by a few seconds.
    """


@hookspec
def run_tags(recipe):
    """Return extra tags (``{str: str}``) for a run of ``recipe``, or ``None``.

    Called before the run starts; the tags end up in ``Run.tags`` (e.g. the paper a recipe
    reproduces). Later plugins cannot remove earlier tags; the recipe's ``tracking.tags`` win.
    """


@hookspec
def run_started(run, data):
    """A run has started: its output folder exists, its data are prepared.

    ``data`` is a :class:`facelab.pipeline.PreparedData` (sample table, crops, split plans,
    counts). Return ``{label: reference}`` for the user (e.g. ``{"MLflow run": "<id>"}``), or
    ``None``; the references are shown at the end and kept in ``RunResult.references``.

    **A resumed run** (``facelab run --resume``) is the same run again: ``run.id``, name, tags,
    output folder and recipe are those of the stopped run, and ``run.resumed_from_epoch`` is
    the number of epochs its checkpoint had done (``None`` for a fresh run, ``0`` when it
    stopped before its first checkpoint). An observer continues what it started for that id
    rather than starting anew (the MLflow plugin reopens its run, whatever its status, and logs
    no params or datasets twice); ``epoch_ended`` then goes on from epoch
    ``resumed_from_epoch + 1``. A run is resumed only if it did not finish, so it may have
    ended with ``run_failed``, or with nothing at all (SIGKILL, a crash of the machine).
    """


@hookspec
def epoch_ended(run, epoch, metrics):
    """Training finished epoch ``epoch`` (1-based).

    ``metrics`` maps :func:`facelab.results.epoch_metric_name` names (``epoch/train/loss``,
    ``epoch/val/race/accuracy``, ``epoch/learning_rate``) to floats.
    """


@hookspec
def run_finished(run, result, outputs):
    """A run finished: training, evaluation and the core's output files are done.

    ``result`` is a :class:`facelab.results.RunResult`; ``outputs`` a
    :class:`facelab.runner.RunOutputs` (the trained Keras model, the prepared data and the
    predicted probabilities per split and task) for observers that draw or log them. Files an
    observer writes under ``run.output_dir`` belong to the run; observers that copy the output
    folder elsewhere should be ``trylast``.
    """


@hookspec
def run_failed(run, status, error):
    """A run ended early: ``status`` is ``"FAILED"`` (an exception) or ``"KILLED"`` (Ctrl-C,
    SIGTERM, or ``facelab.errors.RunStopped``, raised by an observer that stops the run on
    purpose); ``error`` is the exception. The output folder holds what was written so far."""


@hookspec(firstresult=True)
def find_run_output(run_ref):
    """Return the output folder (a path) of the run ``run_ref`` names, or ``None``.

    ``facelab run --resume RUN`` asks this when ``RUN`` is neither an output folder nor the
    ``Run.id`` of a run under the output folder; the first answer that is not ``None`` wins.
    The MLflow plugin answers for an MLflow run id (or facelab's run id) from the tag
    ``facelab.output_dir`` it gives every run.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``facelab`` command line: ``cli`` is its click group.

    Errors a command raises as :class:`facelab.errors.FacelabError` are shown as one line with
    exit code 2, like the core's. Import heavy libraries inside the command, not at module level:
    every ``facelab`` invocation loads every plugin.
    """
