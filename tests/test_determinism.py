"""Same seed, same result on CPU, augmentation included: two quickstart runs (its random flip
on, in the model or in the input pipeline) give identical metrics and histories; a run stopped
after epoch 1 and resumed gives them too; the model preflight changes nothing of the trained
model."""

from __future__ import annotations

import keras
import pytest

from conftest import RECIPES

QUICKSTART = RECIPES / "quickstart.yaml"
TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=2", "evaluate.figures=false", "evaluate.timing_batches=1",
        "tracking.enabled=false"]


def tiny(cache, *more):
    from facelab.recipe import load_recipe

    recipe = load_recipe(QUICKSTART, [*TINY, f"data.cache_dir={cache}", *more])
    assert recipe.augment, "the quickstart's augmentation is part of what is checked"
    return recipe


def outcome(result):
    from facelab.results import metrics_to_json

    return metrics_to_json(result.metrics), result.history


@pytest.fixture(scope="module")
def first(tmp_path_factory, shared_cache):
    import os

    from facelab.runner import run_recipe

    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("determinism"))
    try:
        return outcome(run_recipe(tiny(shared_cache)))
    finally:
        os.chdir(here)


def test_two_runs_with_one_seed_give_identical_metrics(workdir, shared_cache, first):
    import json

    from facelab.results import Efficiency, fairness_from_json, metrics_from_json
    from facelab.runner import run_recipe

    result = run_recipe(tiny(shared_cache))
    assert outcome(result) == first
    # the typed results survive their JSON files (what observers and later commands read back)
    saved = {name: json.loads((result.output_dir / f"{name}.json").read_text())
             for name in ("metrics", "fairness", "efficiency")}
    assert metrics_from_json(saved["metrics"]) == result.metrics
    assert fairness_from_json(saved["fairness"]) == result.fairness
    assert Efficiency.from_json(saved["efficiency"]) == result.efficiency
    # two whole passes over the training set: its rows twice
    assert result.efficiency.epochs == 2
    assert result.efficiency.train_images == 2 * result.efficiency.train_samples


def test_the_preflight_changes_nothing_of_the_trained_model(workdir, shared_cache, first,
                                                            monkeypatch):
    from facelab import preflight
    from facelab.runner import run_recipe

    monkeypatch.setattr(preflight, "check", lambda *args, **kwargs: None)
    assert outcome(run_recipe(tiny(shared_cache))) == first


class StopAtEpoch2(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:  # epoch 1's checkpoint is written
            raise KeyboardInterrupt


def test_a_resumed_run_reproduces_the_uninterrupted_one(workdir, shared_cache, first):
    from pathlib import Path

    from facelab import checkpoints
    from facelab.runner import resume_run, run_recipe

    with pytest.raises(KeyboardInterrupt):
        run_recipe(tiny(shared_cache), callbacks=[StopAtEpoch2()])
    (folder,) = Path("runs").glob("quickstart-*")
    stored = checkpoints.read_run(folder)
    assert stored.status == "KILLED"
    assert outcome(resume_run(stored)) == first


def test_augmentation_in_the_input_pipeline_repeats_and_resumes(workdir, shared_cache):
    """``train.augment_on: pipeline``: the flip draws from each batch's own seeds, in the
    parallel map that gathers the batch; two runs, and a stopped and resumed one, agree."""
    from pathlib import Path

    from facelab import checkpoints
    from facelab.runner import resume_run, run_recipe

    in_pipeline = "train.augment_on=pipeline"
    once = outcome(run_recipe(tiny(shared_cache, in_pipeline, "output_dir=once")))
    assert outcome(run_recipe(tiny(shared_cache, in_pipeline, "output_dir=twice"))) == once
    with pytest.raises(KeyboardInterrupt):
        run_recipe(tiny(shared_cache, in_pipeline, "output_dir=stopped"),
                   callbacks=[StopAtEpoch2()])
    (folder,) = Path("stopped").glob("quickstart-*")
    assert outcome(resume_run(checkpoints.read_run(folder))) == once
