"""The example plugin package in docs/writing-a-plugin.md works as written.

Its files are extracted from the page, built into a wheel offline (the installed setuptools, no
build isolation), installed into a private folder, and used through a real entry point: by the
``facelab`` CLI in subprocesses, by its own tests, and in process.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import facelab.manager
from conftest import REPO

DOC = REPO / "docs" / "writing-a-plugin.md"
PACKAGE = "facelab-tinynet"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>[^ ]+) -->\n```[a-z]*\n(?P<body>.*?)\n```\n", re.S)


def example_files() -> dict[str, str]:
    files = {m["path"]: m["body"] + "\n" for m in FILE_BLOCK.finditer(DOC.read_text())}
    assert files, f"no '<!-- file: ... -->' blocks in {DOC}"
    return files


def test_doc_holds_the_whole_package():
    files = example_files()
    assert set(files) == {f"{PACKAGE}/pyproject.toml", f"{PACKAGE}/facelab_tinynet.py",
                          f"{PACKAGE}/facelab_tinynet_layers.py",
                          f"{PACKAGE}/examples/tinynet.yaml", f"{PACKAGE}/tests/test_tinynet.py"}
    assert '[project.entry-points.facelab]\ntinynet = "facelab_tinynet"' in \
        files[f"{PACKAGE}/pyproject.toml"]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}
    env.pop("PYTHONPATH", None) if "PYTHONPATH" not in extra else None
    return env


def _check(process: subprocess.Popen, what: str) -> str:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, f"{what} failed ({process.returncode}):\n{out}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example package extracted, built into a wheel and installed into ``<tmp>/site``."""
    root = tmp_path_factory.mktemp("plugin-doc")
    for relative, text in example_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # examples/tinynet.yaml extends ../../recipes/quickstart.yaml: the package sits at the root
    # of a facelab checkout.
    shutil.copytree(REPO / "recipes", root / "recipes")
    source, dist, site = root / PACKAGE, root / "dist", root / "site"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(source)], check=True, env=_env(), cwd=root)
    wheel = next(dist.glob("facelab_tinynet-0.1.0-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site),
                    str(wheel)], check=True, env=_env(), cwd=root)
    assert (site / "facelab_tinynet.py").is_file()
    assert any(site.glob("facelab_tinynet-0.1.0.dist-info/entry_points.txt"))
    return {"root": root, "source": source, "site": site}


def test_installed_package_works_through_the_cli(installed):
    """``facelab plugins`` lists it with its package and version; a recipe using it validates;
    the package's own tests (from the doc) pass. The three subprocesses run side by side."""
    root, source, site = installed["root"], installed["source"], installed["site"]
    facelab_cli = [sys.executable, "-m", "facelab.cli"]
    with_plugin = _env(PYTHONPATH=str(site))
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "cwd": root}
    listing = subprocess.Popen([*facelab_cli, "plugins", "--json"], env=with_plugin, **popen)
    validate = subprocess.Popen([*facelab_cli, "validate", str(source / "examples/tinynet.yaml")],
                                env=with_plugin, **popen)
    # The package's tests run from the source folder, not installed: its fixture registers it.
    own_tests = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "tests"], env=_env(PYTHONPATH=str(source)),
                                 **{**popen, "cwd": source})

    components = json.loads(_check(listing, "facelab plugins --json"))
    ours = {(c["kind"], c["name"]): c for c in components if c["package"] == PACKAGE}
    assert set(ours) == {("backbone", "tiny-cnn"), ("augmentation", "pixel-noise")}, components
    for component in ours.values():
        assert component["version"] == "0.1.0"
        assert component["plugin"] == "facelab_tinynet"
        assert component["builtin"] is False
        assert component["summary"]
    assert any(c["builtin"] and c["name"] == "simple-cnn" for c in components)

    out = _check(validate, "facelab validate examples/tinynet.yaml")
    assert "valid" in out and "quickstart-tinynet" in out, out

    out = _check(own_tests, "the example package's tests")
    assert re.search(r"\b5 passed\b", out), out


def test_installed_package_builds_in_process(installed):
    """With the install folder on sys.path, a fresh plugin manager loads the entry point, and
    the components build and run."""
    site = str(installed["site"])
    saved = (facelab.manager._manager, facelab.manager._registry)
    sys.path.insert(0, site)
    importlib.invalidate_caches()
    facelab.manager._manager = facelab.manager._registry = None
    try:
        registry = facelab.manager.get_registry()
        backbone = registry.get("backbone", "tiny-cnn")
        assert (backbone.origin.package, backbone.origin.version) == (PACKAGE, "0.1.0")
        model = backbone.factory(backbone.validate({"filters": [4, 8]}, "model.backbone"),
                                 (32, 32, 3))
        features = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
        assert features.shape == (2, 8, 8, 8)

        from facelab.context import BuildContext

        noise = registry.get("augmentation", "pixel-noise")
        assert noise.origin.package == PACKAGE
        layer = noise.factory(noise.validate({"stddev": 5.0}, "data.augment.0"),
                              BuildContext(cache_dir=installed["root"], seed=0))
        batch = np.full((2, 16, 16, 3), 100.0, np.float32)
        out = np.asarray(layer(batch, training=True))
        assert out.shape == batch.shape and 0 <= out.min() and out.max() <= 255
    finally:
        facelab.manager._manager, facelab.manager._registry = saved
        sys.path.remove(site)
        sys.modules.pop("facelab_tinynet", None)
        importlib.invalidate_caches()
    assert "tiny-cnn" not in facelab.manager.get_registry().names("backbone")
