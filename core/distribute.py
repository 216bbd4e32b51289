"""Several devices in one run: the ``tf.distribute`` strategy that ``train.distribute`` asks for.

- ``none`` (the default): TensorFlow's default strategy, one device; building a model in its
  scope changes nothing.
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over every GPU (or ``devices``): the model is
  built and compiled in the strategy's scope, so each device holds a copy of every variable;
  ``model.fit`` splits each tf.data batch among the copies (replicas) and sums their gradients.
  ``train.batch_size`` is the global batch, each replica gets its share.
- ``logical_cpus``: the CPU is split into that many logical devices
  (``tf.config.set_logical_device_configuration``), to try a multi-device run without GPUs.
  TensorFlow fixes its devices when it starts, so :func:`prepare` runs before anything else
  touches TensorFlow.

One host only: Keras 3 does not work with ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585); docs/scaling.md gives the multi-host path.
"""

from __future__ import annotations

from typing import Any

from facelab.errors import FacelabError

WHERE = "train.distribute"


def prepare(recipe) -> None:
    """Before TensorFlow starts its devices: split the CPU (``logical_cpus``) and check that
    every one of ``devices`` exists. Nothing for ``type: none`` (TensorFlow is not imported)."""
    settings = recipe.schema.train.distribute
    if settings.type == "none":
        return
    import tensorflow as tf

    if settings.logical_cpus:
        _split_cpu(tf, settings.logical_cpus)
    if settings.devices:
        _check_devices(tf, settings.devices)


def _split_cpu(tf, count: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        # setting the configuration TensorFlow already runs with is allowed (a second run in
        # one process); any other raises once its devices exist
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise FacelabError(
            f"{WHERE}.logical_cpus: TensorFlow already started in this process with {have} CPU "
            f"device(s), and logical CPUs must be set before it starts; run the recipe in a new "
            f"process (`facelab run`)") from None


def _device_key(tf, name: str) -> tuple[str, int] | None:
    try:
        spec = tf.DeviceSpec.from_string(name)
    except (ValueError, TypeError):
        return None
    if not spec.device_type or spec.device_index is None:
        return None
    return spec.device_type.upper(), int(spec.device_index)


def _check_devices(tf, devices: list[str]) -> None:
    known = {_device_key(tf, d.name): d.name.removeprefix("/device:")
             for d in tf.config.list_logical_devices()}
    seen = set()
    for i, name in enumerate(devices):
        key = _device_key(tf, name)
        if key is None:
            raise FacelabError(f"{WHERE}.devices.{i}: {name!r} is not a device name; expected "
                               f"a type and an index, e.g. GPU:0 or /cpu:0")
        if key not in known:
            raise FacelabError(f"{WHERE}.devices.{i}: no device {name!r} on this machine "
                               f"(devices: {', '.join(sorted(known.values()))})")
        if key in seen:
            raise FacelabError(f"{WHERE}.devices.{i}: {name!r} is listed twice")
        seen.add(key)


def mirrored_devices(recipe) -> list[str] | None:
    """The devices a ``mirrored`` run trains on: ``devices``, else the logical CPUs, else every
    GPU, else the CPU; ``None`` for ``type: none``."""
    settings = recipe.schema.train.distribute
    if settings.type == "none":
        return None
    if settings.devices:
        return list(settings.devices)
    if settings.logical_cpus:
        return [f"/cpu:{i}" for i in range(settings.logical_cpus)]
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")] or ["/cpu:0"]


def strategy(recipe) -> Any:
    """The run's ``tf.distribute.Strategy`` (after :func:`prepare`)."""
    import tensorflow as tf

    devices = mirrored_devices(recipe)
    if devices is None:
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy(devices)


def check_batches(recipe, set_sizes: dict[str, int]) -> None:
    """The first batch of the training and the validation set (``set_sizes``: split -> images)
    must split evenly among the replicas. Keras (3.15) builds a distributed model from the first
    batch of each set given to ``fit``, averaging its per-replica parts, and fails on parts of
    different sizes (an ``AddN`` shape error in the first epoch): say so before the run."""
    devices = mirrored_devices(recipe)
    replicas = len(devices) if devices else 1
    if replicas == 1:
        return
    for split, key, batch in (("train", "train.batch_size", recipe.schema.train.batch_size),
                              ("val", "evaluate.batch_size", recipe.schema.evaluate.batch_size)):
        size = set_sizes.get(split, 0)
        first = min(batch, size)
        if not first or first % replicas == 0:
            continue
        if batch <= size:
            raise FacelabError(f"{key}: {batch} is not a multiple of the {replicas} replicas of "
                               f"{WHERE}; each replica gets an equal share of a batch")
        raise FacelabError(f"data.split: the {split} set has {size} images, fewer than {key} "
                           f"({batch}) and not a multiple of the {replicas} replicas of {WHERE}; "
                           f"make it a multiple of {replicas}, or {key} a multiple of {replicas} "
                           f"smaller than the set")


def describe(found) -> str:
    """``2 replicas (CPU:0, CPU:1)``."""
    devices = ", ".join(d.removeprefix("/job:localhost/replica:0/task:0/device:")
                        for d in found.extended.worker_devices)
    replicas = found.num_replicas_in_sync
    return f"{replicas} replica{'s' if replicas != 1 else ''} ({devices})"


def single_device(model, recipe):
    """``model`` for what comes after training (evaluation, timing, logging, export): itself
    with ``type: none``; under ``mirrored`` a copy built outside the strategy with the trained
    weights, because Keras's ``predict_on_batch`` on a model built in a MirroredStrategy's
    scope returns the outputs once per replica (measured with Keras 3.15: 10 rows for 5
    images on 2 replicas)."""
    if recipe.schema.train.distribute.type == "none":
        return model
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
