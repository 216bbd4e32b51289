"""The utkface loader on generated UTKFace-layout folders: bad names, unreadable files, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facelab.context import BuildContext
from facelab.errors import FacelabError
from facelab.images import UNREADABLE, read_rgb
from facelab.plugins.datasets.utkface import BAD_NAME, UNREADABLE as UNREADABLE_REASON
from facelab.plugins.datasets.utkface import UtkfaceParams, build, readable, scan


def jpeg_bytes(seed: int = 0, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


GOOD = {  # name -> (race label among white/black/asian/indian, gender, age)
    "25_0_0_20170116174525125.jpg.chip.jpg": (0, 0, 25),
    "3_1_1_20170109150557335.jpg.chip.jpg": (1, 1, 3),
    "61_0_2_20170109142408075.jpg.chip.jpg": (2, 0, 61),
    "40_1_3_20170117135317563.jpg.chip.jpg": (3, 1, 40),
}
BAD_NAMES = [
    "39_1_20170116174525125.jpg.chip.jpg",   # race missing (three real UTKFace files are like this)
    "25_2_0_20170116174525125.jpg.chip.jpg",  # gender 2
    "25_0_7_20170116174525125.jpg.chip.jpg",  # race 7
    "holiday.jpg",
]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "UTKFace"
    (root / "part1").mkdir(parents=True)
    for i, name in enumerate(GOOD):
        (root / ("part1" if i % 2 else "") / name).write_bytes(jpeg_bytes(i))
    for name in BAD_NAMES:
        (root / name).write_bytes(jpeg_bytes(9))
    whole = jpeg_bytes(5)
    (root / "30_0_1_20170116000000001.jpg.chip.jpg").write_bytes(whole[: len(whole) // 2])  # cut
    (root / "30_0_1_20170116000000002.jpg.chip.jpg").write_bytes(b"")  # empty
    (root / "30_0_1_20170116000000003.jpg.chip.jpg").write_bytes(b"not an image at all" * 20)
    (root / "50_1_4_20170116000000004.jpg.chip.jpg").write_bytes(jpeg_bytes(6))  # race others
    (root / "notes.txt").write_text("ignored: not an image suffix")
    return root


def test_layout_rows_and_skip_counts(folder):
    table = scan(folder, ["white", "black", "asian", "indian"], "data.dataset")
    assert len(table) == len(GOOD)
    frame = table.frame.set_index(table.frame["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    for name, (race, gender, age) in GOOD.items():
        assert (frame.loc[name, "race"], frame.loc[name, "gender"], frame.loc[name, "age"]) == \
            (race, gender, age)
    assert dict(table.skipped) == {BAD_NAME: len(BAD_NAMES), UNREADABLE_REASON: 3,
                                   "race others not in classes": 1}
    assert table.class_counts("race") == {"white": 1, "black": 1, "asian": 1, "indian": 1}
    assert list(table.tasks) == ["race", "gender"]


def test_cheap_check_agrees_with_decoding(folder):
    """Every file the loader keeps decodes; every file it calls unreadable fails to decode."""
    for path in sorted(p for p in folder.rglob("*.jpg")):
        try:
            read_rgb(path)
            decodes = True
        except UNREADABLE:
            decodes = False
        assert readable(path) == decodes, path.name


def test_png_with_bad_checksum_is_unreadable(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(bytes(data))
    data[-20] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    bad.write_bytes(bytes(data))
    assert readable(good) and not readable(bad)


def test_classes_choose_and_order_labels(folder):
    table = scan(folder, ["indian", "white"], "data.dataset")
    names = table.frame["path"].map(lambda p: p.rsplit("/", 1)[-1])
    labels = dict(zip(names, table.frame["race"]))
    assert labels == {"25_0_0_20170116174525125.jpg.chip.jpg": 1,
                      "40_1_3_20170117135317563.jpg.chip.jpg": 0}
    # the three broken files are black: a class left out is skipped before its bytes are read
    assert dict(table.skipped) == {BAD_NAME: len(BAD_NAMES), "race black not in classes": 4,
                                   "race asian not in classes": 1, "race others not in classes": 1}


def test_missing_folder(tmp_path):
    with pytest.raises(FacelabError, match=r"data\.dataset\.root: folder .*missing does not exist"):
        build(UtkfaceParams(root=str(tmp_path / "missing")), BuildContext(tmp_path))


def test_root_is_a_file(tmp_path):
    path = tmp_path / "file.jpg"
    path.write_bytes(jpeg_bytes())
    with pytest.raises(FacelabError, match="is not a folder"):
        build(UtkfaceParams(root=str(path)), BuildContext(tmp_path))


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacelabError, match="no readable UTKFace images"):
        build(UtkfaceParams(root=str(tmp_path / "empty")), BuildContext(tmp_path))


def test_folder_of_only_broken_files_says_why(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    (root / "20_0_0_20170116000000001.jpg.chip.jpg").write_bytes(b"")
    (root / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(FacelabError) as info:
        build(UtkfaceParams(root=str(root)), BuildContext(tmp_path))
    message = str(info.value)
    assert "\n" not in message and "unreadable image" in message and BAD_NAME in message


def test_unknown_class_suggests(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FacelabError, match=r"data\.dataset\.classes: unknown race 'indain'; "
                                           r"did you mean 'indian'"):
        scan(tmp_path / "d", ["white", "indain"], "data.dataset")
