"""The preflight: what needs the model is checked before the long work, not after it.

At the start of a run (before the data is prepared where the datasets declare their tasks, right
after it otherwise; always before ``run_started``) :func:`check` builds a separate copy of the
model for the crops' shape, runs one training step on ``train.batch_size`` random images and one
prediction on ``evaluate.batch_size`` of them. A model the input is too small for, or a batch
that does not fit in memory, is one :class:`FacelabError` line naming the setting to change.

The check leaves the run as it found it: Python's, NumPy's and Keras's random states and Keras's
layer-name counters are restored afterwards, so the trained model's initial weights, dropout and
augmentation draws are those of a run without it.
"""

from __future__ import annotations

import gc
import math
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from facelab.errors import FacelabError

#: Rough bytes per activation value in a training step: float32 forward and its gradient.
TRAIN_BYTES_PER_VALUE = 8
#: Optimizer state and gradients: about four float32 copies of the weights (Adam).
BYTES_PER_PARAM = 16


def check(recipe, input_shape, tasks) -> None:
    """Build the model for ``input_shape`` and run one training step and one evaluation batch
    on random input; raise a one-line :class:`FacelabError` naming the setting to change."""
    import tensorflow as tf

    from facelab import pipeline

    shape = tuple(int(x) for x in input_shape)
    train_n = recipe.schema.train.batch_size
    eval_n = recipe.schema.evaluate.batch_size
    with _state_kept():
        model = None
        try:
            try:
                model = pipeline.compile_model(recipe, shape, tasks)
            except FacelabError:
                raise
            except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
                raise _memory_error("train.batch_size", train_n, shape, exc) from None
            except Exception as exc:  # noqa: BLE001 - a shape Keras cannot build
                raise _build_error(recipe, shape, exc) from None
            _check_estimate(model, shape, train_n, eval_n)
            rng = np.random.default_rng(0)
            for setting, n in (("train.batch_size", train_n), ("evaluate.batch_size", eval_n)):
                try:
                    x = rng.random((n, *shape), dtype=np.float32) * 255
                    if setting == "train.batch_size":
                        y = {task: rng.integers(0, t.num_classes, n) for task, t in tasks.items()}
                        model.train_on_batch(x, y)
                    else:
                        model.predict_on_batch(x)
                except (tf.errors.ResourceExhaustedError, MemoryError) as exc:
                    raise _memory_error(setting, n, shape, exc) from None
                except FacelabError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise FacelabError(f"{setting} {n}: one {_step(setting)} on random input "
                                       f"of shape {_dims(shape)} failed: "
                                       f"{type(exc).__name__}: {_first_line(exc)}") from None
                finally:
                    x = None
        finally:
            del model
            gc.collect()


def _step(setting: str) -> str:
    return "training step" if setting == "train.batch_size" else "evaluation batch"


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception encountered")]
    return (useful or lines or [""])[0]


def _device() -> str:
    from facelab.evaluate import device_name

    try:
        return device_name()
    except Exception:  # noqa: BLE001
        return "this machine"


def _memory_error(setting: str, n: int, shape, exc: BaseException | None = None,
                  detail: str = "") -> FacelabError:
    if setting == "train.batch_size":
        head = f"train.batch_size {n} (or evaluate.batch_size)"
    else:
        head = f"evaluate.batch_size {n}"
    return FacelabError(f"{head} does not fit in memory on {_device()} at input "
                        f"{_dims(shape)}{detail}; lower {setting} or data.detector.size")


def _build_error(recipe, shape, exc: BaseException) -> FacelabError:
    line = _first_line(exc)
    backbone = recipe.schema.model.backbone.get("type") \
        if isinstance(recipe.schema.model.backbone, dict) \
        else getattr(recipe.schema.model.backbone, "type", "the backbone")
    if re.search(r"negative|zero|<= ?0|too small|dimension|output size", line, re.I):
        return FacelabError(f"model.backbone: input {_dims(shape)} is too small for {backbone} "
                            f"({line}); use a larger data.detector.size or fewer blocks")
    return FacelabError(f"model: building the model for input {_dims(shape)} failed: "
                        f"{type(exc).__name__}: {line}")


def _activation_values(model) -> int:
    """Values one sample's activations hold, over every layer (nested models included)."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            total += _activation_values(layer)
            continue
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            continue
        for out in (outputs if isinstance(outputs, (list, tuple)) else
                    (outputs.values() if isinstance(outputs, dict) else [outputs])):
            dims = [d for d in tuple(out.shape)[1:]]
            if all(isinstance(d, int) for d in dims):
                total += math.prod(dims)
    return total


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001
        return None


def _check_estimate(model, shape, train_n: int, eval_n: int) -> None:
    """On CPU, refuse before allocating what clearly exceeds the available memory (the system
    would kill the process rather than raise); a GPU raises its own out-of-memory error."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    available = _available_bytes()
    if available is None:
        return
    per_sample = math.prod(shape) + _activation_values(model)
    params = model.count_params() * BYTES_PER_PARAM
    for setting, n, per_value in (("train.batch_size", train_n, TRAIN_BYTES_PER_VALUE),
                                  ("evaluate.batch_size", eval_n, 4)):
        need = n * per_sample * per_value + params
        if need > available:
            raise _memory_error(setting, n, shape, detail=(
                f" (about {need / 2**30:.1f} GiB needed, {available / 2**30:.1f} GiB available)"))


@contextmanager
def _state_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and Keras's random states and Keras's name counters."""
    from keras.src.backend.common import global_state

    from facelab.checkpoints import _global_seed_generator

    python_state, numpy_state = random.getstate(), np.random.get_state()
    generator = _global_seed_generator()
    generator_state = generator.state.numpy() if generator is not None else None
    uids = global_state.get_global_attribute("object_name_uids")
    uids = dict(uids) if uids is not None else None
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if generator is not None:
            generator.state.assign(generator_state)
        else:  # made by the check: the run makes its own from the seed, as without it
            from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

            global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)
        if uids is not None:
            import collections

            global_state.set_global_attribute("object_name_uids",
                                              collections.defaultdict(int, uids))
