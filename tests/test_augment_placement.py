"""Where augmentation runs (``train.augment_on``): in front of the model by default, active in
training only; the model a run keeps, logs and exports has no augmentation layer. The
input-pipeline placement stays an option."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import RECIPES

QUICKSTART = RECIPES / "quickstart.yaml"
TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=1", "evaluate.figures=false", "evaluate.timing_batches=1",
        "evaluate.bootstrap=0", "tracking.enabled=false"]
#: The quickstart's augmentation: a random horizontal flip.
AUGMENTATION = "RandomFlip"


def layer_classes(model) -> set[str]:
    """Class names of every layer, nested models' included."""
    found = set()
    for layer in model.layers:
        found.add(type(layer).__name__)
        if hasattr(layer, "layers"):
            found |= layer_classes(layer)
    return found


def run(cache, *more):
    """The run's result and the ``RunOutputs`` observers got."""
    import facelab
    from facelab.manager import get_plugin_manager
    from facelab.recipe import load_recipe
    from facelab.runner import run_recipe

    kept = []

    class Keep:
        @facelab.hookimpl
        def run_finished(self, run, result, outputs):
            kept.append(outputs)

    manager, observer = get_plugin_manager(), Keep()
    manager.register(observer, name="test-keep-outputs")
    try:
        result = run_recipe(load_recipe(QUICKSTART, [*TINY, f"data.cache_dir={cache}", *more]))
    finally:
        manager.unregister(observer)
    return result, kept[0]


@pytest.fixture(scope="module")
def plain_history(tmp_path_factory, shared_cache):
    """The training history without augmentation, same seed."""
    import os

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("plain"))
    try:
        return run(shared_cache, "data.augment=[]")[0].history
    finally:
        os.chdir(here)


def test_augmentation_in_front_of_the_model_trains_but_is_not_kept(workdir, shared_cache,
                                                                   plain_history):
    import keras

    from facelab.modelspec import ModelSpec
    from facelab.plugins.deploy.export import export_model

    result, outputs = run(shared_cache)  # the default: train.augment_on: model
    assert result.run.recipe.schema.train.augment_on == "model"
    kept = outputs.model  # what tracking logs, export writes, evaluation and timing used
    assert AUGMENTATION not in layer_classes(kept)
    # the model that was trained (checkpointed) had the flip in front of the kept network,
    # sharing its weights, and passes images through unchanged when not training
    training = keras.models.load_model(result.output_dir / "checkpoints" / "last.keras")
    assert AUGMENTATION in layer_classes(training)
    crops = outputs.data.images[:8]
    np.testing.assert_allclose(training.predict_on_batch(crops.astype("float32"))["race"],
                               kept.predict_on_batch(crops.astype("float32"))["race"], atol=1e-6)
    exported = export_model(kept, ModelSpec.read(result.output_dir / "model_spec.json"), "keras",
                            workdir / "export", crops)
    reloaded = keras.models.load_model(exported.path / "model.keras")
    assert AUGMENTATION not in layer_classes(reloaded)
    assert exported.max_difference <= exported.tolerance

    # the flip changed the training: without augmentation the same seed trains otherwise
    assert plain_history["loss"] != result.history["loss"]


def test_augmentation_in_the_input_pipeline_stays_an_option(workdir, shared_cache,
                                                            plain_history):
    import keras

    result, outputs = run(shared_cache, "train.augment_on=pipeline")
    assert AUGMENTATION not in layer_classes(outputs.model)
    training = keras.models.load_model(result.output_dir / "checkpoints" / "last.keras")
    assert AUGMENTATION not in layer_classes(training)  # tf.data flipped the images
    assert plain_history["loss"] != result.history["loss"]
