"""The ``Run`` value: one execution of a recipe, passed explicitly to every lifecycle hook."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.recipe import Recipe, iter_component_specs


@dataclass(frozen=True)
class Run:
    """A run's identity: facelab's id, display name, output folder, tags and recipe.

    ``resumed_from_epoch`` is ``None`` for a fresh run. A run continued by ``facelab run
    --resume`` keeps the id, name, output folder, tags and start time of the run it continues,
    and ``resumed_from_epoch`` is the number of epochs its checkpoint had done (0 when it
    stopped before the first checkpoint, or kept none): training goes on with epoch
    ``resumed_from_epoch + 1``.
    """

    id: str
    name: str
    output_dir: Path
    recipe: Recipe
    tags: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    resumed_from_epoch: int | None = None

    @property
    def resumed(self) -> bool:
        return self.resumed_from_epoch is not None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "output_dir": str(self.output_dir),
                "recipe": self.recipe.name, "tags": dict(self.tags), "started": self.started,
                "resumed_from_epoch": self.resumed_from_epoch}


#: MLflow and most trackers cap run names; longer labels are cut with "...".
MAX_NAME_LENGTH = 250


def short_override(override: str) -> str:
    """``model.attention.type=cbam`` -> ``attention=cbam``; ``train.epochs=3`` -> ``epochs=3``."""
    key, _, value = override.partition("=")
    parts = key.split(".")
    if len(parts) > 1 and parts[0] in ("data", "model", "train", "evaluate", "tracking"):
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "type":
        parts = parts[:-1]
    return f"{'.'.join(parts)}={value}"


#: Overrides that say where a run is kept, not what it does: left out of run names.
NOT_IN_NAMES = ("tracking.", "data.cache_dir=", "output_dir=", "name=", "description=")


def run_label(recipe_name: str, overrides) -> str:
    """``quickstart[attention=cbam,epochs=3]``: the recipe and what the overrides changed, so
    runs of one recipe are told apart in run lists (storage settings such as ``tracking.*``
    and ``data.cache_dir`` are left out)."""
    shown = [o for o in overrides if not o.strip().startswith(NOT_IN_NAMES)]
    if not shown:
        return recipe_name
    label = f"{recipe_name}[{','.join(short_override(o) for o in shown)}]"
    return label if len(label) <= MAX_NAME_LENGTH else label[: MAX_NAME_LENGTH - 4] + "...]"


def new_run_id() -> str:
    return uuid.uuid4().hex


def new_output_dir(recipe: Recipe) -> Path:
    """``<output_dir>/<recipe name>-<YYYYmmdd-HHMMSS>[-n]``, created now."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", recipe.name).strip("._") or "run"
    safe = re.sub(r"\.{2,}", ".", safe)  # never "..": the folder stays inside output_dir
    root = Path(recipe.schema.output_dir).expanduser()
    base = root / f"{safe}-{stamp}"
    if base.resolve().parent != root.resolve():  # a guard: the name above cannot escape
        raise FacelabError(f"name: {recipe.name!r} would write outside output_dir {root}")
    path, i = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            path, i = Path(f"{base}-{i}"), i + 1


def provenance_tags(recipe: Recipe) -> dict[str, str]:
    """Tags every run carries: recipe, versions of facelab and of the plugins used, git."""
    from facelab import __version__

    tags = {"facelab.recipe": recipe.name, "facelab.recipe_hash": recipe.digest,
            "facelab.version": __version__}
    packages: dict[str, str] = {}
    for spec in iter_component_specs(recipe):
        origin = spec.component.origin
        packages[origin.package] = origin.version
        tags[f"facelab.component.{spec.where}"] = (
            f"{spec.name} ({origin.package} {origin.version}, {origin.plugin})")
    tags["facelab.plugins"] = ", ".join(f"{p}=={v}" for p, v in sorted(packages.items()))
    if recipe.path is not None:
        tags["facelab.recipe_path"] = str(Path(recipe.path).resolve())
    if recipe.overrides:
        tags["facelab.overrides"] = " ".join(recipe.overrides)
    tags.update(git_tags(recipe.path))
    return tags


def git_tags(recipe_path: str | Path | None) -> dict[str, str]:
    """The git commit (and whether the tree is dirty) of the recipe's repository, else of the
    facelab source tree; nothing when neither is in a git repository."""
    import facelab

    folders = [Path(recipe_path).resolve().parent] if recipe_path else []
    folders.append(Path(facelab.__file__).resolve().parent)
    for folder in folders:
        commit = _git(folder, "rev-parse", "HEAD")
        if commit:
            dirty = _git(folder, "status", "--porcelain", "--untracked-files=no")
            return {"facelab.git_commit": commit, "facelab.git_dirty": "true" if dirty else "false"}
    return {}


def _git(folder: Path, *args: str) -> str:
    if not folder.is_dir():
        return ""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
