"""Atomic writes: a file is written under a hidden temporary name in its own folder
(``.NAME.XXXX.tmp``), then renamed over ``NAME``, so a reader, or a process killed mid-write,
never sees half a file. Every file facelab writes for later reading goes through here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON atomically (NumPy scalars and arrays as numbers and
    lists, anything else unknown as its ``str``)."""
    write_text(path, json.dumps(value, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
