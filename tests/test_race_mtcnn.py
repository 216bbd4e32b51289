"""The mtcnn detector on a real photo (scikit-image's astronaut): crop, align, no-face handling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from facelab.context import BuildContext
from facelab.manager import get_registry
from facelab.plugins.detectors.mtcnn import DROPPED, FACE, KEPT, eye_angle


def detector(**params):
    component = get_registry().get("detector", "mtcnn")
    return component.factory(component.validate(params, "data.detector"), BuildContext("/tmp"))


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()  # 512x512 RGB; her face is near (182, 64), 83x107 pixels


def faces_in(crop: np.ndarray) -> list[dict]:
    from mtcnn import MTCNN

    return MTCNN().detect_faces([crop])[0]


def test_finds_and_crops_the_face(astronaut):
    found = detector(size=(160, 160), margin=0.1).detect([astronaut])
    assert len(found) == 1 and found[0].status == FACE
    crop = found[0].crop
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    # the crop is the face: MTCNN finds it again, large and centred
    (face,) = [f for f in faces_in(crop) if f["confidence"] > 0.9]
    x, y, w, h = face["box"]
    assert w > 0.55 * 160 and abs(x + w / 2 - 80) < 16 and abs(y + h / 2 - 80) < 24


def test_batch_gives_the_same_crops(astronaut):
    """Same-size batches change speed only, which is why cache_key() leaves batch_size out."""
    single = detector(size=(96, 96)).detect([astronaut])[0].crop
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = detector(size=(96, 96), batch_size=3).detect([astronaut, flipped, astronaut])
    assert [d.status for d in batch] == [FACE] * 3
    np.testing.assert_array_equal(batch[0].crop, single)
    np.testing.assert_array_equal(batch[2].crop, single)


def test_align_levels_the_eyes(astronaut):
    tilted = np.asarray(Image.fromarray(astronaut).rotate(-20, Image.BILINEAR))
    angles = {}
    for align in (False, True):
        crop = detector(size=(160, 160), align=align).detect([tilted])[0].crop
        (face,) = [f for f in faces_in(crop) if f["confidence"] > 0.9]
        angles[align] = eye_angle(face["keypoints"])
    assert abs(angles[False]) > 12 and abs(angles[True]) < 4


def test_no_face_keep_drop_and_grey():
    blank = np.full((120, 100, 3), 127, np.uint8)
    kept = detector(size=(64, 48), colour="grey").detect([blank, blank])
    assert [d.status for d in kept] == [KEPT, KEPT]
    assert kept[0].crop.shape == (64, 48, 1) and (kept[0].crop == 127).all()
    dropped = detector(no_face="drop").detect([blank])
    assert dropped[0].crop is None and dropped[0].status == DROPPED


def test_low_confidence_counts_as_no_face(astronaut):
    result = detector(min_confidence=1.0, no_face="drop").detect([astronaut])[0]
    assert result.status == DROPPED


def test_lazy_and_cache_key():
    d = detector()
    assert d._mtcnn is None and d.output_shape == (224, 224, 3)  # nothing loaded until detect()
    key = d.cache_key()
    assert key["mtcnn"] == "1.0.0" and "batch_size" not in key
    params = set(type(d.params).model_fields) - {"batch_size"}
    assert params <= set(key)
    for change in ({"margin": 0.2}, {"align": True}, {"pick": "largest"}, {"size": (64, 64)},
                   {"colour": "grey"}, {"no_face": "drop"}, {"min_confidence": 0.5},
                   {"square": False}, {"min_face_size": 40}):
        assert detector(**change).cache_key() != key, change
    assert detector(batch_size=8).cache_key() == key
