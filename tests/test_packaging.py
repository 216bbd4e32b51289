"""The distribution: facelab and facelab.plugins only, every plugin module shipped, no keras-cv."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

from conftest import REPO


def test_wheel_installs_only_the_facelab_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True)
    wheel = next(tmp_path.glob("facelab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"facelab", next(t for t in top if t.endswith(".dist-info"))}
    shipped = {n for n in names if n.endswith(".py")}
    for source in (REPO / "plugins").rglob("*.py"):
        assert f"facelab/plugins/{source.relative_to(REPO / 'plugins')}" in shipped, source
    for source in (REPO / "core").glob("*.py"):
        assert f"facelab/{source.name}" in shipped, source
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "facelab = facelab.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_dependencies_and_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = " ".join(project["dependencies"])
    for name in ("tensorflow", "keras", "mtcnn", "imbalanced-learn", "scikit-learn", "mlflow",
                 "pluggy", "click", "rich", "pyyaml", "pydantic"):
        assert name in deps, name
    assert "keras-cv" not in deps and "keras_cv" not in deps
    assert "keras-cv" in " ".join(project["optional-dependencies"]["keras-cv"])
    assert "pytest" in " ".join(project["optional-dependencies"]["test"])
    assert project["requires-python"] == ">=3.11"


def test_top_level_layout():
    names = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
    assert {"core", "plugins", "recipes", "tests", "docs", "pyproject.toml", "README.md"} <= names


def test_core_never_imports_a_plugin_module():
    for source in (REPO / "core").glob("*.py"):
        text = source.read_text()
        assert "facelab.plugins." not in text, f"{source.name} names a plugin module"


def test_ci_runs_the_readme_commands():
    """.ci/run installs and tests exactly as the README's two set-up commands say."""
    import re

    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme.split("## Everyday commands")[0])
    assert len(commands) == 2, commands
    ci = (REPO / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, command
