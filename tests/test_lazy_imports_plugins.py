"""Loading the plugins and validating a recipe import neither TensorFlow/Keras nor MLflow (nor
pandas, scipy, scikit-learn); Keras classes live in ``*_layers`` modules that a saved model
needs imported before it loads; optimizers and schedules are checked from Keras's source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import RECIPES
from facelab.errors import FacelabError

#: Recipe files that are not runnable recipes: the papers' numbers, and the multi-task configs'
#: shared part (it has no data.datasets or model.heads of its own).
NOT_RECIPES = {"race-2025/paper.yaml", "multitask-2023/paper.yaml"}
NOT_RUNNABLE = {"multitask-2023/base.yaml"}
#: Modules that validating must not import: each costs from half a second to ten seconds.
HEAVY = ("tensorflow", "keras", "mlflow", "pandas", "scipy", "sklearn")


def _run(code: str, tmp_path, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                 "TF_CPP_MIN_LOG_LEVEL": "3", **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _recipes() -> list[str]:
    names = sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml"))
    # recipes/sweeps/ holds sweep files, checked by test_sweep_optuna
    return [n for n in names if n not in NOT_RECIPES and not n.startswith("sweeps/")]


def test_validating_every_shipped_recipe_imports_no_heavy_module(tmp_path):
    recipes = _recipes()
    assert {"quickstart.yaml", "race-2025/bd-am.yaml",
            "multitask-2023/config-c.yaml"} <= set(recipes)
    data = {name: str(tmp_path / name.lower()) for name in
            ("UTKFACE_DIR", "GENKI4K_DIR", "IMDB_WIKI_DIR", "FAIRFACE_DIR")}
    for folder in data.values():
        os.mkdir(folder)
    out = _run(f"""
        import json, sys
        from facelab.errors import FacelabError
        from facelab.manager import get_registry
        from facelab.recipe import load_recipe

        get_registry()
        after_plugins = [m for m in {HEAVY!r} if m in sys.modules]
        failed = {{}}
        for name in {recipes!r}:
            try:
                load_recipe({str(RECIPES)!r} + "/" + name)
            except FacelabError as exc:
                failed[name] = str(exc)
        print(json.dumps({{"after_plugins": after_plugins, "failed": failed,
                           "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
    """, tmp_path, **data)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["after_plugins"] == [], "loading the plugins imported these"
    assert set(report["failed"]) == NOT_RUNNABLE, report["failed"]
    assert report["heavy"] == [], "validating the recipes imported these"


def test_a_saved_model_with_cbam_reloads_in_a_fresh_process(tmp_path):
    """Keras 3 records each custom class's module in the .keras file, but imports it only for
    its own packages (keras, keras_hub, ...), so the plugin's ``KERAS_MODULES`` must be imported
    before ``keras.models.load_model``; nothing else of facelab is needed."""
    import keras

    from facelab.data import Task
    from facelab.manager import get_registry

    registry = get_registry()
    cbam = registry.get("attention", "cbam")
    loss = registry.get("loss", "cross-entropy")
    layer = cbam.factory(cbam.validate({"reduction": 2, "kernel_size": 3}, "model.attention"))
    inputs = keras.Input((6, 6, 8))
    features = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    model = keras.Model(inputs, {"race": keras.layers.Dense(3, activation="softmax",
                                                            name="race")(features)})
    spec = loss.factory(loss.validate({}, "train.loss"), {"race": Task("race", ("a", "b", "c"))})
    model.compile(optimizer="sgd", loss=spec.losses)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0)["race"])
    model.save(tmp_path / "model.keras")

    modules = [*sys.modules[cbam.factory.__module__].KERAS_MODULES,
               *sys.modules[loss.factory.__module__].KERAS_MODULES]
    assert modules == ["facelab.plugins.attention.cbam_layers",
                       "facelab.plugins.losses.cross_entropy_layers"]
    out = _run(f"""
        import importlib, json, sys
        import numpy as np
        import keras

        try:  # Keras alone: works only if Keras imports the recorded module itself
            keras.models.load_model("model.keras")
            plain = "loaded"
        except TypeError as exc:
            plain = str(exc)
        for module in {modules!r}:
            importlib.import_module(module)
        model = keras.models.load_model("model.keras")
        np.testing.assert_allclose(model.predict(np.load("x.npy"), verbose=0)["race"],
                                   np.load("y.npy"), rtol=1e-5)
        print(json.dumps({{"plain": plain,
                           "layers": [type(layer).__name__ for layer in model.layers],
                           "loss": type(model.loss["race"]).__name__,
                           "facelab": sorted(m for m in sys.modules if m.startswith("facelab"))}}))
    """, tmp_path)
    report = json.loads(out.strip().splitlines()[-1])
    assert "CBAM" in report["layers"]
    assert report["loss"] == "MaskedSparseCategoricalCrossentropy"
    # no plugin manager, no plugin module: only the layer modules (and their packages)
    assert "facelab.manager" not in report["facelab"]
    assert [m for m in report["facelab"] if m.count(".") >= 3] == sorted(modules)
    assert report["plain"] == "loaded" or "CBAM" in report["plain"] \
        or "could not be deserialized" in report["plain"], report["plain"]


# --------------------------------------------------------------------------------------------
# train.optimizer and train.schedule, checked from Keras's source
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["optimizer", "schedule"])
def test_static_keras_signatures_match_keras(kind):
    """The hand-written reader of Keras's source finds the classes and arguments Keras has."""
    from facelab import keras_objects

    static = keras_objects._static_constructors(kind)
    assert static.complete
    assert static == keras_objects._imported_constructors(kind)


def _check(kind: str, **spec):
    from facelab.keras_objects import check_keras_object
    from facelab.recipe import KerasObject

    check_keras_object(kind, KerasObject(**spec), f"train.{kind}")


def test_static_check_messages():
    _check("optimizer", type="Adam", learning_rate=0.1, beta_1=0.8)
    _check("optimizer", type="sgd", momentum=0.9, nesterov=True)
    _check("schedule", type="exponential-decay", initial_learning_rate=0.1, decay_steps=10,
           decay_rate=0.5)
    _check("schedule", type="Cosine_Decay", initial_learning_rate=0.1, decay_steps=10)
    with pytest.raises(FacelabError, match=r"^train.optimizer.type: unknown optimizer 'adamm'; "
                                           r"did you mean 'adam'"):
        _check("optimizer", type="adamm")
    with pytest.raises(FacelabError, match=r"^train.schedule.decay_step: unknown schedule "
                                           r"argument 'decay_step'; did you mean 'decay_steps'"):
        _check("schedule", type="cosine-decay", initial_learning_rate=0.1, decay_step=3)
    with pytest.raises(FacelabError, match=r"^train.schedule.decay_steps: field required"):
        _check("schedule", type="cosine-decay", initial_learning_rate=0.1)


def test_static_check_falls_back_to_keras(monkeypatch):
    """An unexpected Keras layout, or a name the reader could not follow, asks Keras itself."""
    from facelab import keras_objects

    def broken(kind):
        raise SyntaxError("unexpected layout")

    monkeypatch.setattr(keras_objects, "_static_constructors", broken)
    _check("optimizer", type="adam", learning_rate=0.1)
    with pytest.raises(FacelabError, match="did you mean 'learning_rate'"):
        _check("optimizer", type="adam", learning_rat=0.1)

    partial = keras_objects._Constructors({"SGD": ("self", "learning_rate")}, {"SGD": ()},
                                   complete=False)
    monkeypatch.setattr(keras_objects, "_static_constructors", lambda kind: partial)
    _check("optimizer", type="adam", beta_1=0.8)  # not in the partial table: Keras has it
    with pytest.raises(FacelabError, match="unknown optimizer 'adamm'"):
        _check("optimizer", type="adamm")


def test_wrong_values_fail_when_built_naming_the_key():
    from facelab.keras_objects import build_keras_object
    from facelab.recipe import KerasObject

    _check("optimizer", type="sgd", momentum=2)  # a value: not checked at validation
    with pytest.raises(FacelabError, match=r"^train.optimizer: invalid optimizer arguments "
                                           r"\{'momentum': 2\}"):
        build_keras_object("optimizer", KerasObject(type="sgd", momentum=2), "train.optimizer")


def test_check_keras_values_builds_both_up_front():
    from facelab.recipe import check_keras_values, load_recipe

    quickstart = RECIPES / "quickstart.yaml"
    check_keras_values(load_recipe(quickstart))
    recipe = load_recipe(quickstart, ["train.schedule.decay_steps=0"])  # validates: a value
    with pytest.raises(FacelabError, match=r"quickstart.yaml: train.schedule: invalid schedule "
                                           r"arguments .*decay_steps"):
        check_keras_values(recipe)
