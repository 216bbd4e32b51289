"""Images are read as they are: 16-bit and palette images convert correctly to 8 bits, very
large images are skipped with their own reason, counted in ``facelab data``; interrupted work
leaves nothing behind, and two processes can fill one cold cache at once."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.images import (MAX_PIXELS, TOO_LARGE, UNREADABLE_IMAGE, ImageTooLarge,
                            image_problem, read_rgb)

SIDE = 16


# --------------------------------------------------------------------------------------------
# PNG files written by hand, so the bit depths and chunks are exactly what the test says
# --------------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, depth: int, colour: int, rows: bytes | None = None,
        extra: tuple[tuple[bytes, bytes], ...] = (), zero_row_bytes: int = 0) -> bytes:
    """A PNG: IHDR (``depth`` bits, colour type ``colour``), ``extra`` chunks, then IDAT holding
    ``rows`` (filter bytes included), or ``height`` rows of zeros streamed (cheap when huge)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    if rows is None:
        packer, parts, zeros = zlib.compressobj(1), [], bytes(min(zero_row_bytes + 1, 1 << 24))
        for _ in range(height):
            left = zero_row_bytes + 1
            while left:
                n = min(left, len(zeros))
                parts.append(packer.compress(zeros[:n]))
                left -= n
        parts.append(packer.flush())
        data = b"".join(parts)
    else:
        data = zlib.compress(rows)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + b"".join(_chunk(k, v) for k, v in extra) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def rows_of(pixels: np.ndarray) -> bytes:
    """Big-endian samples, one filter byte (0) per row."""
    big = pixels.astype(pixels.dtype.newbyteorder(">"))
    flat = big.reshape(big.shape[0], -1)
    return b"".join(b"\x00" + row.tobytes() for row in flat)


def grey16() -> tuple[bytes, np.ndarray]:
    values = np.linspace(0, 65535, SIDE * SIDE).astype(np.uint16).reshape(SIDE, SIDE)
    expected = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2)
    return png(SIDE, SIDE, 16, 0, rows_of(values)), expected


def rgb16() -> tuple[bytes, np.ndarray]:
    values = np.random.default_rng(1).integers(0, 65536, (SIDE, SIDE, 3)).astype(np.uint16)
    return png(SIDE, SIDE, 16, 2, rows_of(values)), (values >> 8).astype(np.uint8)


def palette_with_transparency() -> tuple[bytes, np.ndarray]:
    palette = np.random.default_rng(2).integers(0, 256, (8, 3)).astype(np.uint8)
    index = (np.arange(SIDE * SIDE) % 8).astype(np.uint8).reshape(SIDE, SIDE)
    alpha = bytes([0, 64, 128, 255, 0, 255, 10, 200])  # tRNS: one alpha per palette entry
    data = png(SIDE, SIDE, 8, 3, rows_of(index),
               extra=((b"PLTE", palette.tobytes()), (b"tRNS", alpha)))
    return data, palette[index]  # colour kept, alpha dropped


def huge() -> bytes:
    """One row of ``MAX_PIXELS + 1`` grey pixels: 134 MB of zeros, about 130 KB compressed."""
    return png(MAX_PIXELS + 1, 1, 8, 0, zero_row_bytes=MAX_PIXELS + 1)


@pytest.mark.parametrize("make", [grey16, rgb16, palette_with_transparency],
                         ids=["16-bit grey", "16-bit RGB", "palette with transparency"])
def test_read_as_8_bit(tmp_path, make, recwarn):
    data, expected = make()
    path = tmp_path / "odd.png"
    path.write_bytes(data)
    with Image.open(path) as image:  # the file really is what the test says
        assert image.mode in {"I;16", "I;16B", "I", "RGB", "P"}, image.mode
    assert image_problem(path) is None
    got = read_rgb(path)
    assert got.dtype == np.uint8 and got.shape == (SIDE, SIDE, 3)
    np.testing.assert_array_equal(got, expected)
    assert not [w for w in recwarn if "ransparency" in str(w.message)]


def test_grey16_is_not_clipped_white(tmp_path):
    data, _ = grey16()
    (tmp_path / "g.png").write_bytes(data)
    got = read_rgb(tmp_path / "g.png")
    assert got.mean() == pytest.approx(127, abs=2)  # clipped to 255, it was almost all white


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    started = time.perf_counter()
    path.write_bytes(huge())
    assert time.perf_counter() - started < 10
    return path


def test_too_large_is_its_own_reason(huge_png, tmp_path):
    started = time.perf_counter()
    assert image_problem(huge_png) == TOO_LARGE
    with pytest.raises(ImageTooLarge, match=f"image too large: {MAX_PIXELS + 1:,} pixels"):
        read_rgb(huge_png)
    assert time.perf_counter() - started < 1  # the header says it: nothing is decoded
    (tmp_path / "junk.png").write_bytes(b"not a png")
    assert image_problem(tmp_path / "junk.png") == UNREADABLE_IMAGE
    assert TOO_LARGE == f"image too large: over {MAX_PIXELS:,} pixels"


def test_crop_stage_counts_too_large(huge_png, tmp_path):
    """The crop stage (for datasets that do not look at images) counts the reason too."""
    from facelab.context import BuildContext, QuietProgress
    from facelab.crops import crop_all
    from facelab.manager import get_registry

    detector_spec = get_registry().get("detector", "none")
    ctx = BuildContext(cache_dir=tmp_path / "cache")
    detector = detector_spec.factory(detector_spec.validate({"size": [SIDE, SIDE]}, "d"), ctx)
    data, expected = grey16()
    (tmp_path / "g.png").write_bytes(data)
    result = crop_all([str(tmp_path / "g.png"), str(huge_png)], detector, tmp_path / "cache",
                      QuietProgress())
    assert result.statuses[TOO_LARGE] == 1
    assert list(result.kept) == [True, False]
    np.testing.assert_array_equal(result.images[0], expected)


def test_facelab_data_counts_every_skip_reason(huge_png, tmp_path):
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(
                root / cls / f"{i}.png")
    (root / "a" / "grey16.png").write_bytes(grey16()[0])
    (root / "a" / "rgb16.png").write_bytes(rgb16()[0])
    (root / "b" / "palette.png").write_bytes(palette_with_transparency()[0])
    os.link(huge_png, root / "b" / "huge.png")  # no copy of 134 MB
    (root / "b" / "broken.png").write_bytes(b"\x89PNG garbage")
    recipe = tmp_path / "own.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: odd
        data:
          dataset: {{type: folder, root: {root}}}
          detector: {{type: none, size: [{SIDE}, {SIDE}]}}
          split: {{test: 0.2, val: 0.2}}
          cache_dir: {tmp_path / 'cache'}
        model:
          backbone: {{type: simple-cnn, filters: [4]}}
          heads: {{label: {{type: classification}}}}
        train: {{epochs: 1, loss: {{type: cross-entropy}}}}
        tracking: {{enabled: false}}
        """))
    # a real process, as a user runs it
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "facelab.cli", "data", str(recipe), "--json"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    counts = json.loads(done.stdout)
    assert counts["skipped"] == {TOO_LARGE: 1, UNREADABLE_IMAGE: 1}
    assert counts["used"]["total"] == 23  # 20 + 16-bit grey, 16-bit RGB, palette
    assert sum(counts["detector"].values()) == 23


# --------------------------------------------------------------------------------------------
# Leftovers of interrupted runs, and two processes on one cold cache
# --------------------------------------------------------------------------------------------

def test_leftovers_are_removed_at_the_next_start(tmp_path):
    from facelab.context import BuildContext
    from facelab.crops import CropCache
    from facelab.plugins.datasets import synthetic

    params = synthetic.SyntheticParams(count=20, size=16)
    cache = tmp_path / "cache"
    folder = synthetic.dataset_folder(params, cache)
    folder.parent.mkdir(parents=True)
    own = folder.parent / f".tmp-{folder.name}-killed"  # this parameter set's, interrupted
    old = folder.parent / ".tmp-oldstyle"  # an older version's, untouched for an hour
    fresh = folder.parent / ".tmp-busy"  # another process's, being written now
    for tmp in (own, old, fresh):
        tmp.mkdir()
        (tmp / "0.jpg").write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    synthetic.build(params, BuildContext(cache_dir=cache))
    assert (folder / "generator.json").exists()
    assert not own.exists() and not old.exists() and fresh.exists()

    crops = CropCache(cache, {"detector": "x"})
    (crops.folder / "ab").mkdir(parents=True)
    stale, busy = crops.folder / "ab" / "tmpold.tmp", crops.folder / "ab" / "tmpnew.tmp"
    stale.write_bytes(b"half")
    busy.write_bytes(b"half")
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert crops.remove_stale() == 1
    assert not stale.exists() and busy.exists()


LOAD = """
import hashlib, sys, time
from pathlib import Path
from facelab.context import BuildContext
from facelab.plugins.datasets import synthetic
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
table = synthetic.build(synthetic.SyntheticParams(count=300, size=32),
                        BuildContext(cache_dir=Path(sys.argv[1])))
for path in sorted(table.frame["path"]):
    print(Path(path).name, hashlib.sha256(Path(path).read_bytes()).hexdigest())
"""


def test_two_processes_fill_one_cold_cache(tmp_path):
    cache, go = tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = [subprocess.Popen([sys.executable, "-c", LOAD, str(cache), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(1.5)  # both imported and waiting
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    assert outputs[0][0] == outputs[1][0]
    assert len(outputs[0][0].splitlines()) > 250  # 300 drawn, "others" not in the classes
    leftovers = [p.name for p in (cache / "synthetic").iterdir() if p.name.startswith(".tmp-")]
    assert not leftovers
    assert Counter(p.suffix for p in (cache / "synthetic").iterdir()) == Counter(
        {"": 1, ".lock": 1})
