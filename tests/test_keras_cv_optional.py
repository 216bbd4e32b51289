"""keras-cv is optional: its plugin registers components only when keras_cv imports."""

from __future__ import annotations

import sys
import types

import pytest

from facelab import manager
from facelab.plugins.augment import keras_cv as keras_cv_plugin


@pytest.fixture
def fresh_registry():
    manager.reset()
    try:
        yield
    finally:
        manager.reset()


def _names() -> list[str]:
    return manager.get_registry().names("augmentation")


def test_absent_keras_cv_registers_nothing(monkeypatch, fresh_registry):
    monkeypatch.setitem(sys.modules, "keras_cv", None)  # makes `import keras_cv` fail
    assert keras_cv_plugin._keras_cv() is None
    names = _names()
    assert "flip" in names
    assert not [n for n in names if n.startswith("keras-cv")]


def test_present_keras_cv_registers_its_layers(monkeypatch, fresh_registry):
    made = []

    def layer(kind):
        return lambda *args, **kwargs: made.append((kind, args, kwargs)) or kind

    fake = types.ModuleType("keras_cv")
    fake.layers = types.SimpleNamespace(GridMask=layer("grid"), RandomCutout=layer("cutout"))
    monkeypatch.setitem(sys.modules, "keras_cv", fake)
    registry = manager.get_registry()
    assert {"keras-cv-grid-mask", "keras-cv-cutout"} <= set(registry.names("augmentation"))
    component = registry.get("augmentation", "keras-cv-cutout")
    params = component.validate({"height_factor": 0.2}, "data.augment.0")
    assert component.factory(params, None) == "cutout"
    assert made == [("cutout", (0.2, 0.3), {})]
    assert registry.get("augmentation", "keras-cv-grid-mask").origin.package == "facelab"
