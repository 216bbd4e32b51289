"""Running a model in its own runtime: Keras, TensorFlow (SavedModel), the TFLite interpreter or
onnxruntime. Each runtime maps float32 images (N, H, W, C) in 0-255 to {task: probabilities}."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError

#: The extra that installs the ONNX converter and runtime.
ONNX_EXTRA = "pip install 'facelab[export]'"
ONNX_MODULES = ("tf2onnx", "onnxruntime")


def missing_onnx_modules() -> list[str]:
    from importlib.util import find_spec

    return [m for m in ONNX_MODULES if find_spec(m) is None]


def require_onnx() -> None:
    missing = missing_onnx_modules()
    if missing:
        raise FacelabError(f"--format onnx needs {' and '.join(missing)}, from the 'export' extra: "
                           f"{ONNX_EXTRA}")


def _tensorflow():
    from facelab.cli import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    return tf


def load_keras(path: Path):
    """A ``.keras`` file, with the plugins' Keras classes imported first; not compiled."""
    _tensorflow()
    import keras

    from facelab.manager import import_keras_modules

    import_keras_modules()
    return keras.saving.load_model(path, compile=False)


def _as_dict(outputs, names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(outputs, dict):
        return {k: np.asarray(v, np.float32) for k, v in outputs.items()}
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return {n: np.asarray(v, np.float32) for n, v in zip(names, outputs, strict=True)}


class KerasRuntime:
    def __init__(self, model):
        self.model = model

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return _as_dict(self.model.predict_on_batch(images), list(self.model.output_names))


class SavedModelRuntime:
    """TensorFlow's own loader and the export's ``serve`` endpoint."""

    def __init__(self, path: Path):
        tf = _tensorflow()
        self.tf = tf
        self.loaded = tf.saved_model.load(str(path))

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return _as_dict(self.loaded.serve(self.tf.constant(images, self.tf.float32)), [])


class TFLiteRuntime:
    """TensorFlow's TFLite interpreter, through the model's serving signature (named outputs)."""

    def __init__(self, path: Path):
        tf = _tensorflow()
        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still shipped
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path))
        signatures = interpreter.get_signature_list()
        name = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        self.input = signatures[name]["inputs"][0]
        self.runner = interpreter.get_signature_runner(name)

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return _as_dict(self.runner(**{self.input: images.astype(np.float32)}), [])


class OnnxRuntime:
    """onnxruntime on the CPU."""

    def __init__(self, path: Path):
        missing = missing_onnx_modules()
        if "onnxruntime" in missing:
            raise FacelabError(f"an ONNX model needs onnxruntime, from the 'export' extra: "
                               f"{ONNX_EXTRA}")
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path),
                                                    providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {self.input: images.astype(np.float32)})
        return _as_dict(values, self.outputs)


RUNTIMES = {"savedmodel": SavedModelRuntime, "tflite": TFLiteRuntime, "onnx": OnnxRuntime}


def load_runtime(fmt: str, path: Path):
    if fmt == "keras":
        return KerasRuntime(load_keras(path))
    return RUNTIMES[fmt](path)
