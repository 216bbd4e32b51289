"""facelab: plugin-based experiments for face-attribute classification (TensorFlow, Keras 3)."""

from importlib.metadata import PackageNotFoundError, version as _version

import pluggy

try:
    __version__ = _version("facelab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

#: Decorator for plugin hook implementations: ``@facelab.hookimpl``.
hookimpl = pluggy.HookimplMarker("facelab")

from facelab.params import Params, field  # noqa: E402

__all__ = ["__version__", "hookimpl", "Params", "field"]
