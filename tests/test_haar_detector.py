"""The ``haar`` detector (OpenCV's Haar cascades): finds the astronaut's face, crops exactly as
``mtcnn`` crops (the shared face_crop geometry), caches by everything that changes a crop, and
says how to install OpenCV when it is missing."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from facelab.cli import cli
from facelab.context import BuildContext, QuietProgress
from facelab.crops import crop_all
from facelab.errors import FacelabError
from facelab.manager import get_registry

#: The astronaut's face as MTCNN boxes it (x, y, width, height), measured with the mtcnn
#: detector's defaults (tests/test_deploy.py checks the same box within 10 px).
MTCNN_BOX = (182, 64, 83, 107)


def detector(name: str = "haar", **params):
    component = get_registry().get("detector", name)
    return component.factory(component.validate(params, "data.detector"), BuildContext("/tmp"))


def iou(a, b) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_haar_is_listed(cli_runner):
    result = cli_runner.invoke(cli, ["plugins", "detector", "--json"])
    assert result.exit_code == 0, result.output
    assert {"haar", "mtcnn", "none"} <= {c["name"] for c in json.loads(result.stdout)}


def test_haar_finds_the_astronauts_face_and_crops_like_mtcnn():
    astronaut = skimage_data.astronaut()
    haar = detector(size=(64, 64))
    (face,) = haar.detect_all(astronaut)
    assert face.status == "face" and face.confidence >= 5  # at least min_neighbors detections
    assert iou(face.box, MTCNN_BOX) > 0.6, face.box
    np.testing.assert_array_equal(face.crop, haar.detect([astronaut])[0].crop)

    mtcnn = detector("mtcnn", size=(64, 64))
    mtcnn_crop = mtcnn.detect([astronaut])[0].crop
    assert face.crop.shape == mtcnn_crop.shape == haar.output_shape == mtcnn.output_shape
    assert face.crop.dtype == mtcnn_crop.dtype == np.uint8
    grey = detector(size=(48, 32), colour="grey").detect([astronaut])[0].crop
    assert grey.shape == (48, 32, 1) == detector("mtcnn", size=(48, 32), colour="grey").output_shape

    # the geometry, by hand: no margin, a square box at its own size is the box's pixels
    x, y, w, h = face.box
    assert w == h  # Haar boxes are square
    bare = detector(size=(h, w), margin=0).detect([astronaut])[0].crop
    np.testing.assert_array_equal(bare, astronaut[y:y + h, x:x + w])
    # a margin of m adds m * side on each side, clipped to the image
    wide = detector(size=(64, 64), margin=0.5).detect([astronaut])[0]
    side = 2 * w
    top, left = round(y + h / 2 - side / 2), round(x + w / 2 - side / 2)
    expected = np.asarray(Image.fromarray(
        astronaut[max(0, top):top + side, max(0, left):left + side]).resize((64, 64),
                                                                          Image.BILINEAR))
    np.testing.assert_array_equal(wide.crop, expected)


def test_every_face_the_chosen_face_and_no_face():
    astronaut = skimage_data.astronaut()
    two = np.concatenate([astronaut, np.ascontiguousarray(astronaut[:, ::-1])], axis=1)
    faces = detector(size=(32, 32)).detect_all(two)
    assert len(faces) >= 2
    confidences = [f.confidence for f in faces]
    assert confidences == sorted(confidences, reverse=True)
    centres = sorted(f.box[0] + f.box[2] / 2 for f in faces[:2])
    assert centres[0] < 512 < centres[1]  # the two most confident: one face in each half
    largest = max(faces, key=lambda f: f.box[2] * f.box[3])
    assert detector(size=(32, 32)).detect([two])[0].box == largest.box  # pick: largest
    assert detector(size=(32, 32), pick="confidence").detect([two])[0].box == faces[0].box

    flat = np.full((100, 80, 3), 127, np.uint8)
    (kept,) = detector(size=(32, 32)).detect_all(flat)
    assert kept.status == "no face: whole image kept" and kept.box == (0, 0, 80, 100)
    assert kept.crop.shape == (32, 32, 3)
    dropped = detector(no_face="drop").detect([flat])[0]
    assert dropped.crop is None and dropped.status == "no face: dropped"
    assert detector(no_face="drop").detect_all(flat) == []


def test_cache_key_covers_everything_that_changes_a_crop(tmp_path):
    base = detector().cache_key()
    import cv2

    assert base["opencv"] == cv2.__version__
    assert base["cascade_file"] == "haarcascade_frontalface_default.xml"
    assert len(base["cascade_sha256"]) == 16
    assert detector().cache_key() == base
    for change in ({"cascade": "alt2"}, {"scale_factor": 1.2}, {"min_neighbors": 3},
                   {"min_face_size": 30}, {"equalize": False}, {"pick": "confidence"},
                   {"margin": 0.2}, {"square": False}, {"size": (32, 32)}, {"colour": "grey"},
                   {"no_face": "drop"}):
        assert detector(**change).cache_key() != base, change

    # through the crop stage: cached once, hit the second time, missed with other parameters
    Image.fromarray(skimage_data.astronaut()).save(tmp_path / "astronaut.png")
    paths = [str(tmp_path / "astronaut.png")]
    first = crop_all(paths, detector(size=(32, 32)), tmp_path / "cache", QuietProgress())
    again = crop_all(paths, detector(size=(32, 32)), tmp_path / "cache", QuietProgress())
    other = crop_all(paths, detector(size=(32, 32), min_neighbors=3), tmp_path / "cache",
                     QuietProgress())
    assert (first.detector_calls, again.detector_calls, other.detector_calls) == (1, 0, 1)
    assert first.statuses == again.statuses == {"face": 1}
    np.testing.assert_array_equal(first.images, again.images)


def test_parameters_are_checked():
    component = get_registry().get("detector", "haar")
    for bad, key in (({"scale_factor": 1.0}, "scale_factor"), ({"min_neighbors": -1},
                                                                "min_neighbors"),
                     ({"cascade": "eyes"}, "cascade"), ({"min_neighbours": 3}, "min_neighbours")):
        with pytest.raises(FacelabError, match=f"data.detector.{key}"):
            component.validate(bad, "data.detector")


def test_without_opencv_it_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    with pytest.raises(FacelabError, match=r"pip install 'facelab\[detectors\]'"):
        detector()
