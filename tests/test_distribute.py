"""Several devices in one run (``train.distribute``): a run mirrored over two logical CPUs
completes, reports two replicas (terminal, efficiency.json, the logged metrics) and trains as the
single-device run with the same seed does; bad settings are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import RECIPES
from facelab.cli import cli
from facelab.errors import FacelabError
from test_resume import facelab

QUICKSTART = RECIPES / "quickstart.yaml"
#: No augmentation, dropout or batch normalisation: each would differ between one device and two
#: for reasons other than the distribution itself (a replica draws its own dropout masks and
#: flips; Keras's BatchNormalization normalises each replica's half batch by its own statistics).
#: Five steps an epoch (134 training images, batch 32): the two runs must see the same batches in
#: the same order, although Keras reads an extra batch under a tf.distribute strategy to build
#: the model (the input pipeline's epochs are part of its data, not a count of its iterators).
TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "data.augment=[]", "model.backbone.batch_norm=false", "model.heads.race.dropout=0",
        "train.epochs=2", "train.batch_size=32", "evaluate.batch_size=8",
        "evaluate.figures=false", "evaluate.timing_batches=1", "evaluate.bootstrap=0",
        "tracking.enabled=false"]
MIRRORED = "train.distribute={type: mirrored, logical_cpus: 2}"
#: Largest difference allowed between the epoch losses (training and validation) of the two
#: runs. Both compute the same float32 sums in another order: one device sums a batch's 32
#: per-sample losses and gradients in one pass, two replicas sum 16 each and add the halves
#: (gradients all-reduced). Measured on this project's 2-core CPU over the two epochs: 7.2e-7 at
#: most in the training loss, 2.2e-5 in the validation loss. A different data order (an input
#: pipeline that counted Keras's extra iterator as an epoch) moved the first epoch's loss by
#: 7.5e-3, and a gradient scaled by the number of replicas changes it by far more.
TOLERANCE = 1e-4


def sets(cache, *more) -> list[str]:
    return [x for item in (*TINY, f"data.cache_dir={cache}", *more) for x in ("--set", item)]


def test_a_run_mirrored_over_two_logical_cpus_trains_as_one_device_does(workdir, shared_cache):
    # logical CPUs must be set before TensorFlow starts: a process of its own
    process = facelab("run", str(QUICKSTART), *sets(shared_cache, MIRRORED),
                      log=workdir / "mirrored.log")
    process.wait(timeout=300)
    log = (workdir / "mirrored.log").read_text()
    assert process.returncode == 0, log
    assert "training on 2 replicas (CPU:0, CPU:1), global batch 32" in log, log
    (folder,) = Path("runs").glob("quickstart-*")
    assert json.loads((folder / "efficiency.json").read_text())["replicas"] == 2
    mirrored = json.loads((folder / "history.json").read_text())

    from facelab.recipe import load_recipe
    from facelab.runner import run_recipe

    single = run_recipe(load_recipe(QUICKSTART, [*TINY, f"data.cache_dir={shared_cache}",
                                                 "output_dir=single"]))
    assert single.efficiency.replicas == 1
    # what tracking plugins log as metrics (the MLflow plugin: every final metric)
    assert single.final_metrics()["efficiency/replicas"] == 1
    gaps = [abs(a - b) for key in ("loss", "val_loss")
            for a, b in zip(mirrored[key], single.history[key])]
    print(f"\nepoch losses, 2 replicas vs 1 device: {mirrored['loss']} vs "
          f"{single.history['loss']}; largest gap (with val_loss) {max(gaps):.2e}")
    assert len(gaps) == 4 and max(gaps) <= TOLERANCE, gaps
    assert single.history["loss"][1] < single.history["loss"][0] - 0.01  # it does train


@pytest.mark.parametrize("setting, message", [
    ("train.distribute.logical_cpus=2",
     "train.distribute.logical_cpus: only used with type: mirrored"),
    ("train.distribute={type: mirrored, logical_cpus: 1}",
     "train.distribute.logical_cpus: input should be greater than or equal to 2"),
    ("train.distribute={type: mirrored, logical_cpus: 65}",
     "train.distribute.logical_cpus: input should be less than or equal to 64"),
    ("train.distribute={type: none, devices: [GPU:0]}",
     "train.distribute.devices: only used with type: mirrored"),
    ("train.distribute={type: mirrored, gpus: 2}",
     "train.distribute.gpus: unknown key 'gpus'"),
    ("train.augment_on=gpu", "train.augment_on: input should be 'model' or 'pipeline'"),
])
def test_bad_distribute_settings_are_refused_in_one_line(cli_runner, setting, message):
    result = cli_runner.invoke(cli, ["validate", str(QUICKSTART), "--set", setting])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output, result.output


def recipe(*more):
    from facelab.recipe import load_recipe

    return load_recipe(QUICKSTART, list(more))


@pytest.mark.parametrize("devices, message", [
    ("[GPU:7]", "train.distribute.devices.0: no device 'GPU:7' on this machine (devices: "
                "CPU:0"),
    ("[CPU:0, banana]", "train.distribute.devices.1: 'banana' is not a device name"),
    ("[CPU:0, /cpu:0]", "train.distribute.devices.1: '/cpu:0' is listed twice"),
])
def test_devices_that_do_not_exist_are_refused(devices, message):
    from facelab import distribute

    with pytest.raises(FacelabError) as error:
        distribute.prepare(recipe(f"train.distribute={{type: mirrored, devices: {devices}}}"))
    assert message in str(error.value)


def test_logical_cpus_once_tensorflow_started_are_refused():
    import tensorflow as tf

    from facelab import distribute

    tf.config.list_logical_devices()  # TensorFlow has started its devices (one CPU)
    with pytest.raises(FacelabError, match="train.distribute.logical_cpus: TensorFlow already "
                                           "started in this process with 1 CPU device"):
        distribute.prepare(recipe("train.distribute={type: mirrored, logical_cpus: 3}"))


@pytest.mark.parametrize("more, sizes, message", [
    (["train.batch_size=33"], {"train": 100, "val": 20},
     "train.batch_size: 33 is not a multiple of the 2 replicas"),
    ([], {"train": 100, "val": 15},
     "data.split: the val set has 15 images, fewer than evaluate.batch_size (64)"),
])
def test_batches_the_replicas_cannot_share_are_refused(more, sizes, message):
    from facelab import distribute

    with pytest.raises(FacelabError) as error:
        distribute.check_batches(recipe(MIRRORED, *more), sizes)
    assert message in str(error.value)
    distribute.check_batches(recipe(MIRRORED), {"train": 100, "val": 16})  # even shares


#: Modules that define the models' layers, heads and losses: written in ``keras.ops``, so the
#: models stay portable to the Keras backends whose ``keras.distribution`` trains across hosts
#: (JAX); see docs/scaling.md.
PORTABLE = ["core/model.py", "plugins/attention/*_layers.py", "plugins/heads/*.py",
            "plugins/losses/*.py"]


def test_layers_heads_and_losses_import_no_tensorflow():
    import ast

    root = Path(__file__).resolve().parent.parent
    files = sorted(path for pattern in PORTABLE for path in root.glob(pattern))
    assert len(files) >= 8, files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "tensorflow", f"{path}: imports {name}"
                assert not name.startswith("keras.src.backend.tensorflow"), f"{path}: {name}"
