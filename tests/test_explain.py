"""What the model looks at: Grad-CAM for every backbone (nested, flattened, through CBAM) and
CBAM's spatial map; Grad-CAM finds the one region that decides the class; `evaluate.explain`
writes overlays; `facelab explain` explains the faces of photos."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from fixtures_runs import QUICKSTART, run_quickstart
from facelab.cli import cli
from facelab.data import Task
from facelab.model import build_model
from facelab.recipe import load_recipe

TASKS = {"race": Task("race", ["white", "black", "asian", "indian"]),
         "gender": Task("gender", ["male", "female"])}
TWO_HEADS = 'model.heads={"race": {"type": "classification"}, "gender": {"type": "classification"}}'
EFFICIENTNET = ["model.backbone.variant=b0", "model.backbone.weights=null"]


def model_of(overrides: list[str], input_shape):
    recipe = load_recipe(QUICKSTART, overrides)
    return build_model(recipe, input_shape, {task: TASKS[task] for task in recipe.tasks})


# --------------------------------------------------------------------------------------------
# Grad-CAM on every backbone
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone, attention, extra, input_shape, map_shape", [
    ("simple-cnn", "none", [], (32, 32, 3), (4, 4, 64)),
    ("simple-cnn", "cbam", [], (32, 32, 3), (4, 4, 64)),
    # bknet flattens inside itself (so no attention can follow): the map is found inside it
    ("bknet", "none", ["model.backbone.filters=[[4],[8]]"], (32, 32, 1), (8, 8, 8)),
    ("mbknet", "none", ["model.backbone.filters=[[4],[8],[8]]"], (32, 32, 3), (4, 4, 8)),
    ("efficientnet", "cbam", EFFICIENTNET, (48, 48, 3), (2, 2, 1280)),
    # greyscale: EfficientNet nested in a wrapper; with its classifier: its output is 2-D
    ("efficientnet", "none", [*EFFICIENTNET, "model.backbone.include_top=true"], (48, 48, 1),
     (2, 2, 1280)),
])
def test_grad_cam_for_every_backbone(backbone, attention, extra, input_shape, map_shape):
    from facelab.plugins.responsible.gradcam import GradCam

    model = model_of([f"model.backbone.type={backbone}", f"model.attention.type={attention}",
                      *extra, TWO_HEADS], input_shape)
    config = json.dumps(model.get_config(), default=str)
    images = np.random.default_rng(0).uniform(0, 255, (3, *input_shape)).astype(np.float32)
    cam = GradCam(model)
    explained = cam.explain(images, batch_size=2)
    assert cam.feature_map_shape == map_shape
    expected = {task: np.asarray(p) for task, p in model(images, training=False).items()}
    for task in ("race", "gender"):
        heatmap = explained.heatmaps[task]
        assert heatmap.shape == (3, *input_shape[:2])
        assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
        np.testing.assert_allclose(explained.probabilities[task], expected[task], atol=1e-5)
        np.testing.assert_array_equal(explained.explained[task], expected[task].argmax(axis=1))
    if attention == "cbam":
        assert explained.attention.shape == (3, *input_shape[:2])
        assert 0 < explained.attention.min() and explained.attention.max() < 1  # a sigmoid
    else:
        assert explained.attention is None
    assert json.dumps(model.get_config(), default=str) == config  # the model is untouched


def test_cbam_spatial_attention_is_the_map_it_multiplies_by():
    from facelab.plugins.attention.cbam_layers import CBAM

    layer = CBAM(reduction=2, kernel_size=3)
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 8)).astype(np.float32)
    attended = np.asarray(layer(x))
    spatial = np.asarray(layer.spatial_attention(x))
    assert spatial.shape == (2, 5, 6, 1) and np.ptp(spatial) > 0
    refined = np.asarray(layer._channel_refined(x))
    np.testing.assert_allclose(attended, refined * spatial, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Does it mean something? A class decided by one region only
# --------------------------------------------------------------------------------------------

SIZE, MARK = 32, 6


def marked_images(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise; class 1 has a bright square somewhere in the top-right quadrant, class 0 none."""
    images = rng.uniform(0, 120, (count, SIZE, SIZE, 1)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    for image, label in zip(images, labels):
        if label:
            top = rng.integers(0, SIZE // 2 - MARK + 1)
            left = SIZE // 2 + rng.integers(0, SIZE // 2 - MARK + 1)
            image[top:top + MARK, left:left + MARK] = 255
    return images, labels


def test_grad_cam_mass_falls_in_the_region_that_decides_the_class():
    import keras

    from facelab.plugins.responsible.gradcam import GradCam

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    train, test = marked_images(rng, 300), marked_images(rng, 200)
    model = model_of(["model.backbone.filters=[8,16]", "model.heads.race.dropout=0"],
                     (SIZE, SIZE, 1))
    model.compile(keras.optimizers.Adam(1e-2), {"race": "sparse_categorical_crossentropy"})
    model.fit(train[0], {"race": train[1]}, epochs=4, batch_size=32, verbose=0)
    predicted = model.predict(test[0], verbose=0)["race"].argmax(axis=1)
    assert (predicted == test[1]).mean() >= 0.9  # it learned the mark

    explained = GradCam(model).explain(test[0])
    chosen = (predicted == test[1]) & (test[1] == 1)
    heatmaps = explained.heatmaps["race"][chosen]
    in_region = heatmaps[:, :SIZE // 2, SIZE // 2:].sum(axis=(1, 2))
    share = in_region / np.maximum(heatmaps.sum(axis=(1, 2)), 1e-12)
    assert chosen.sum() >= 50 and share.mean() > 0.6  # the quadrant is a quarter of the image


# --------------------------------------------------------------------------------------------
# evaluate.explain in a run, and facelab explain
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def explained_run(tmp_path_factory):
    """A tiny quickstart run with CBAM and `evaluate.explain: 2`, tracked in MLflow."""
    folder = tmp_path_factory.mktemp("explain")
    overrides = ["data.dataset.count=120", "data.dataset.size=24", "data.detector.size=[24,24]",
                 "train.epochs=1", "evaluate.figures=false", "evaluate.timing_batches=1",
                 "model.attention.type=cbam", "evaluate.explain=2",
                 f"data.cache_dir={folder / 'cache'}"]
    with pytest.MonkeyPatch.context() as patch:
        run_id, output = run_quickstart(folder, overrides, patch)
        Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
        yield {"folder": folder, "output": output, "run_id": run_id}


def test_a_run_with_evaluate_explain_writes_overlays(explained_run):
    metrics = json.loads((explained_run["output"] / "metrics.json").read_text())
    accuracy = metrics["test"]["race"]["accuracy"]
    assert 0 < accuracy < 1  # so there are correct and wrong predictions to explain
    for kind in ("correct", "wrong"):
        with Image.open(explained_run["output"] / "explain" / f"race_{kind}.png") as image:
            width, height = image.size
            # two examples side by side; image, Grad-CAM and CBAM panels under each other
            assert height > width > 200
    from mlflow import MlflowClient  # the MLflow plugin logs them after this observer

    # an absolute URI: MLflow caches one store per URI, so a relative one may point elsewhere
    store = f"sqlite:///{explained_run['folder'] / 'mlflow.db'}"
    logged = MlflowClient(store).list_artifacts(explained_run["run_id"], "explain")
    assert sorted(a.path for a in logged) == ["explain/race_correct.png", "explain/race_wrong.png"]


def test_facelab_explain_writes_an_overlay_per_face(explained_run, cli_runner):
    faces = explained_run["folder"] / "faces"
    faces.mkdir()
    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(faces / "grey.png")
    result = cli_runner.invoke(cli, ["explain", explained_run["run_id"], "astronaut.png",
                                     str(faces), "--output", "out", "--task", "race"])
    assert result.exit_code == 0, result.output
    assert "2 photos, 2 faces explained, 0 without a face; overlays in out" in result.output
    with Image.open(explained_run["folder"] / "out" / "astronaut_face1.png") as image:
        assert image.size[0] > image.size[1]  # image, Grad-CAM, CBAM in a row
    assert (explained_run["folder"] / "out" / "grey_face1.png").is_file()


def test_facelab_explain_by_run_output_folder(explained_run, cli_runner, workdir):
    """From a folder without the MLflow store: the run folder's checkpoint is the model."""
    result = cli_runner.invoke(cli, ["explain", str(explained_run["output"]),
                                     str(explained_run["folder"] / "astronaut.png"),
                                     "--output", "out"])
    assert result.exit_code == 0, result.output
    assert "1 photos, 1 faces explained, 0 without a face; overlays in out" in result.output
    with Image.open(workdir / "out" / "astronaut_face1.png") as image:
        assert image.size[0] > image.size[1]  # image, Grad-CAM, CBAM in a row


def test_facelab_explain_refuses_bad_input_in_one_line(explained_run, cli_runner):
    missing = cli_runner.invoke(cli, ["explain", explained_run["run_id"], "nowhere.png"])
    assert missing.exit_code == 2
    assert missing.output.strip() == ("error: nowhere.png: no such file or folder; expected "
                                      "photos or folders of photos")
    task = cli_runner.invoke(cli, ["explain", explained_run["run_id"], "astronaut.png",
                                   "--task", "rase"])
    assert task.exit_code == 2 and "did you mean 'race'?" in task.output
    assert len(task.output.strip().splitlines()) == 1 and "Traceback" not in task.output
