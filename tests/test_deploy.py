"""``facelab predict`` and ``facelab export`` on a briefly trained quickstart model: every face,
crops exactly as training made them, every export format reloaded by its own runtime."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from fixtures_runs import QUICKSTART, run_quickstart
from facelab.cli import cli
from facelab.context import BuildContext
from facelab.manager import get_registry
from facelab.modelspec import FILE as SPEC_FILE

TINY = ["data.dataset.count=200", "data.dataset.size=24", "data.detector.size=[24,24]",
        "train.epochs=1", "evaluate.figures=false", "evaluate.timing_batches=1"]
CLASSES = ["white", "black", "asian", "indian"]
DIFFERENCE = re.compile(r"max \|difference\| (\S+) on (\d+) crops \(tolerance (\S+)\)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quickstart trained for one epoch on 200 tiny images, tracked in MLflow; the tests
    run in its folder (mlflow.db, runs/), with photos to predict on beside it."""
    folder = tmp_path_factory.mktemp("deploy")
    overrides = [*TINY, f"data.cache_dir={folder / 'cache'}"]
    with pytest.MonkeyPatch.context() as patch:
        run_id, output = run_quickstart(folder, overrides, patch)
        Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
        (generated,) = [p for p in (folder / "cache" / "synthetic").iterdir()
                        if p.is_dir() and not p.name.startswith(".")]  # not its lock file
        faces = folder / "faces"
        shutil.copytree(generated, faces, ignore=shutil.ignore_patterns("*.json"))
        (faces / "notes.txt").write_text("not a photo\n")
        yield {"folder": folder, "run_id": run_id, "output": output, "overrides": overrides,
               "faces": faces, "patch": patch}


def invoke(cli_runner, *args):
    return cli_runner.invoke(cli, [str(a) for a in args])


def mtcnn(**params):
    component = get_registry().get("detector", "mtcnn")
    return component.factory(component.validate(params, "data.detector"), BuildContext("/tmp"))


def two_astronauts() -> np.ndarray:
    astronaut = skimage_data.astronaut()
    return np.concatenate([astronaut, np.ascontiguousarray(astronaut[:, ::-1])], axis=1)


# --------------------------------------------------------------------------------------------
# The detector contract: detect_all
# --------------------------------------------------------------------------------------------

def test_mtcnn_detect_all_finds_every_face_and_crops_as_detect():
    detector, astronaut = mtcnn(size=(64, 64)), skimage_data.astronaut()
    (face,) = detector.detect_all(astronaut)
    x, y, w, h = face.box
    assert face.status == "face" and face.confidence > 0.99
    assert abs(x - 182) < 10 and abs(y - 64) < 10 and 70 < w < 100 and 90 < h < 125
    # the training crop and the predict crop are one function's output
    np.testing.assert_array_equal(face.crop, detector.detect([astronaut])[0].crop)
    faces = detector.detect_all(two_astronauts())
    assert len(faces) >= 2 and all(f.crop.shape == (64, 64, 3) for f in faces)
    centres = sorted(f.box[0] + f.box[2] / 2 for f in faces[:2])
    assert centres[0] < 512 < centres[1]  # one face in each half
    assert mtcnn(no_face="drop").detect_all(np.full((100, 100, 3), 127, np.uint8)) == []
    (kept,) = mtcnn().detect_all(np.full((100, 80, 3), 127, np.uint8))
    assert kept.status == "no face: whole image kept" and kept.box == (0, 0, 80, 100)


def test_none_detector_detect_all_is_the_whole_image():
    component = get_registry().get("detector", "none")
    detector = component.factory(component.validate({"size": (24, 24)}, "d"), BuildContext("/"))
    image = np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8)
    (whole,) = detector.detect_all(image)
    assert whole.box == (0, 0, 40, 50) and whole.confidence is None
    np.testing.assert_array_equal(whole.crop, detector.detect([image])[0].crop)


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------

def test_predict_the_astronaut_by_run_id(trained, cli_runner):
    result = invoke(cli_runner, "predict", trained["run_id"], "astronaut.png", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)  # the quickstart's `none` detector: one whole-image face
    assert row["file"] == "astronaut.png" and row["face"] == 1
    assert (row["x"], row["y"], row["width"], row["height"]) == (0, 0, 512, 512)
    assert row["race"] in CLASSES and 0.25 <= row["race_probability"] <= 1
    table = invoke(cli_runner, "predict", f"runs:/{trained['run_id']}/model", "astronaut.png")
    assert table.exit_code == 0, table.output
    assert "astronaut.png" in table.stdout and row["race"] in table.stdout
    assert "1 photos, 1 faces, 0 without a face; 0 files skipped" in table.output


def test_predict_by_run_output_folder(trained, cli_runner, tmp_path, monkeypatch):
    """A run's output folder is a MODEL: its logged model where the store knows the run, else
    the checkpoint the run evaluated (no early stopping: the last epoch's); the same numbers."""
    from facelab.plugins.deploy.model_source import resolve

    folder, output = trained["folder"], trained["output"]
    by_run = json.loads(invoke(cli_runner, "predict", trained["run_id"], "astronaut.png",
                               "--json").stdout)
    tracked = invoke(cli_runner, "predict", output, "astronaut.png", "--json")
    assert tracked.exit_code == 0, tracked.output
    assert json.loads(tracked.stdout) == by_run
    source = resolve(str(output))
    assert source.location.startswith("models:/") and source.run_id == trained["run_id"]
    assert source.output_dir == output and "name: quickstart" in source.recipe_text()
    monkeypatch.chdir(tmp_path)  # another folder: no mlflow.db, so the checkpoint
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # set by MLflow's set_tracking_uri
    moved = invoke(cli_runner, "predict", output, folder / "astronaut.png", "--json")
    source = resolve(str(output))
    assert moved.exit_code == 0, moved.output
    (row,) = json.loads(moved.stdout)
    assert row["race"] == by_run[0]["race"]
    assert row["race_probability"] == pytest.approx(by_run[0]["race_probability"], abs=1e-5)
    assert source.location == str(output / "checkpoints" / "last.keras")
    assert source.run_id is None and source.description.endswith("(checkpoints/last.keras)")


def test_predict_a_folder_equals_the_pipelines_own_predictions(trained, cli_runner):
    from facelab.context import QuietProgress
    from facelab.pipeline import make_context, prepare_data
    from facelab.plugins.deploy.model_source import build_detector, resolve
    from facelab.plugins.deploy.predict import predict_files
    from facelab.recipe import load_recipe

    folder, faces = trained["folder"], trained["faces"]
    result = invoke(cli_runner, "predict", trained["run_id"], "faces", "--csv", "rows.csv",
                    "--annotate", "annotated")
    assert result.exit_code == 0, result.output
    assert "skipped faces/notes.txt: not an image" in result.output
    photos = sorted(p for p in faces.iterdir() if p.suffix == ".jpg")
    assert f"{len(photos)} photos, {len(photos)} faces, 0 without a face; 1 files skipped" \
        in result.output
    rows = list(csv.DictReader((folder / "rows.csv").open()))
    assert [r["file"] for r in rows] == [f"faces/{p.name}" for p in photos]
    annotated = sorted((folder / "annotated").iterdir())
    assert [p.name for p in annotated] == [f"{Path(p.name).stem}.png" for p in photos]
    with Image.open(annotated[0]) as image, Image.open(photos[0]) as original:
        assert image.size == original.size

    # the pipeline's own crops and predictions for the training images
    recipe = load_recipe(QUICKSTART, trained["overrides"])
    prepared = prepare_data(recipe, make_context(recipe, QuietProgress()))
    source = resolve(trained["run_id"])
    model = source.keras_model()
    expected = model.predict_on_batch(prepared.images.astype(np.float32))["race"]
    paths = list(prepared.table.frame["path"])
    mine = predict_files([Path(p) for p in paths], build_detector(source.spec),
                         source.runtime(), source.spec, batch_size=50, keep_crops=True)
    np.testing.assert_array_equal(np.stack(mine.crops), prepared.images)  # the same crops
    got = np.stack([f.probabilities["race"] for f in mine.faces])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    by_name = {Path(r["file"]).name: r for r in rows}
    for path, probs in zip(paths, expected):
        row = by_name[Path(path).name]
        assert row["race"] == CLASSES[int(probs.argmax())]
        assert abs(float(row["race_probability"]) - float(probs.max())) < 1e-5


def test_predict_through_an_mtcnn_spec_finds_every_face(trained, cli_runner, tmp_path):
    """The multi-face path end to end: the trained model with an mtcnn crop in its spec."""
    export = trained["folder"] / "exports" / "keras"
    if not export.exists():
        assert invoke(cli_runner, "export", trained["run_id"], "--format", "keras",
                      "--output", export).exit_code == 0
    model = tmp_path / "mtcnn-model"
    shutil.copytree(export, model)
    spec = json.loads((model / SPEC_FILE).read_text())
    spec["detector"] = {"type": "mtcnn", "size": [24, 24], "colour": "rgb", "no_face": "drop"}
    (model / SPEC_FILE).write_text(json.dumps(spec))
    Image.fromarray(two_astronauts()).save(tmp_path / "two.png")
    Image.fromarray(np.full((120, 100, 3), 127, np.uint8)).save(tmp_path / "blank.png")
    result = invoke(cli_runner, "predict", model, tmp_path / "two.png", tmp_path / "blank.png",
                    "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    two = [r for r in rows if r["file"].endswith("two.png")]
    assert len(two) >= 2 and [r["face"] for r in two] == list(range(1, len(two) + 1))
    assert all(r["confidence"] > 0.9 and r["race"] in CLASSES for r in two)
    (blank,) = [r for r in rows if r["file"].endswith("blank.png")]
    assert blank["face"] is None and blank["status"] == "no face" and blank["race"] is None


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["keras", "savedmodel", "tflite", "onnx"])
def test_export_reloads_compares_and_predicts_elsewhere(trained, cli_runner, fmt, tmp_path):
    folder = trained["folder"]
    output = folder / "exports" / fmt
    if output.exists():  # made by the mtcnn test
        shutil.rmtree(output)
    result = invoke(cli_runner, "export", trained["run_id"], "--format", fmt, "--output", output)
    assert result.exit_code == 0, result.output
    difference, crops, tolerance = DIFFERENCE.search(result.output).groups()
    assert float(difference) <= float(tolerance) and int(crops) == 32
    print(f"{fmt}: max |difference| {difference} on {crops} crops")
    assert json.loads((output / SPEC_FILE).read_text()) == json.loads(
        next((folder / "runs").glob(f"*/{SPEC_FILE}")).read_text())
    assert not list(output.parent.glob(".*tmp*"))
    if fmt == "keras":
        import zipfile

        config = json.loads(zipfile.ZipFile(output / "model.keras").read("config.json"))
        assert not config.get("compile_config")  # no optimizer, loss or metrics

    by_run = json.loads(invoke(cli_runner, "predict", trained["run_id"], "astronaut.png",
                               "--json").stdout)[0]
    photo = folder / "astronaut.png"
    trained["patch"].chdir(tmp_path)  # another folder: no mlflow.db, no runs/
    try:
        moved = invoke(cli_runner, "predict", output, photo, "--json")
    finally:
        trained["patch"].chdir(folder)
    assert moved.exit_code == 0, moved.output
    (row,) = json.loads(moved.stdout)
    assert row["race"] == by_run["race"]
    assert abs(row["race_probability"] - by_run["race_probability"]) <= float(tolerance)


def test_export_beyond_tolerance_exits_1_and_leaves_nothing(trained, cli_runner):
    output = trained["folder"] / "exports" / "strict"
    result = invoke(cli_runner, "export", trained["run_id"], "--format", "tflite",
                    "--output", output, "--tolerance", "-1")
    assert result.exit_code == 1, result.output
    assert "beyond the tolerance -1; nothing written" in result.output
    assert not output.exists() and not list(output.parent.glob(".strict*"))


def test_export_compares_on_given_photos(trained, cli_runner):
    output = trained["folder"] / "exports" / "from-photos"
    result = invoke(cli_runner, "export", trained["run_id"], "--format", "keras", "--output",
                    output, "--images", "faces")
    assert result.exit_code == 0, result.output
    assert "on 32 crops" in result.output


def test_onnx_without_the_extra_names_it(trained, cli_runner, monkeypatch):
    from facelab.plugins.deploy import runtimes

    monkeypatch.setattr(runtimes, "missing_onnx_modules", lambda: ["tf2onnx", "onnxruntime"])
    result = invoke(cli_runner, "export", trained["run_id"], "--format", "onnx", "--output",
                    trained["folder"] / "exports" / "no-onnx")
    assert result.exit_code == 2
    assert "pip install 'facelab[export]'" in result.output


# --------------------------------------------------------------------------------------------
# Errors: one line, exit code 2
# --------------------------------------------------------------------------------------------

def test_errors_name_what_is_wrong(trained, cli_runner, tmp_path):
    cases = [
        (["predict", "deadbeef", "astronaut.png"], "run deadbeef: no run id starts with it"),
        (["predict", trained["run_id"], "missing.png"], "missing.png: no such file or folder"),
        (["predict", tmp_path, "astronaut.png"], f"no {SPEC_FILE} in {tmp_path}"),
        (["predict", "no/such/model", "astronaut.png"], "MODEL 'no/such/model': no such file"),
        (["export", trained["run_id"], "--format", "keras", "--output", "runs"],
         "--output runs: already exists"),
    ]
    (tmp_path / "spec-only").mkdir()
    shutil.copy(next((trained["folder"] / "runs").glob(f"*/{SPEC_FILE}")),
                tmp_path / "spec-only" / SPEC_FILE)
    cases.append((["predict", tmp_path / "spec-only", "astronaut.png"], "but no saved model"))
    unfinished = tmp_path / "unfinished"  # a run folder whose run.json says RUNNING
    shutil.copytree(next((trained["folder"] / "runs").iterdir()), unfinished)
    run_file = unfinished / "run.json"
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "status": "RUNNING"}))
    cases.append((["predict", unfinished, "astronaut.png"],
                  "the run's status is RUNNING, not FINISHED; expected a finished run"))
    hostile = tmp_path / "hostile"  # its id would go into an MLflow search filter
    shutil.copytree(unfinished, hostile)
    (hostile / "run.json").write_text(json.dumps({**json.loads(run_file.read_text()),
                                                  "id": "x' OR '1'='1", "status": "FINISHED"}))
    cases.append((["predict", hostile, "astronaut.png"], "is not a facelab run id"))
    for args, message in cases:
        result = invoke(cli_runner, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, \
            result.output


def test_help_imports_nothing_heavy(tmp_path):
    from test_startup import loaded

    for command in ("predict", "export"):
        modules, output = loaded([command, "--help"], tmp_path)
        assert "Example" in output and not modules, (command, modules)
