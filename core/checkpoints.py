"""Checkpoints and resuming: what a run keeps in its output folder so that ``facelab run
--resume`` can continue it after it stopped (Ctrl-C, SIGTERM, SIGKILL, a crash, a reboot).

- ``run.json``, written when the run starts: facelab's run id, name, tags and start time, the
  recipe (path, ``--set`` overrides, resolved YAML and digest), and the run's status: RUNNING
  until the runner marks it FINISHED, FAILED or KILLED (a SIGKILL leaves RUNNING).
- ``checkpoints/last.keras`` and ``last.json`` after every epoch (``train.checkpoints``): the
  compiled training model (weights and optimizer state; with ``train.augment_on: model`` the
  augmentation layers in front of the network) and, as JSON, the epoch, the Keras history so
  far, the training seconds, the best validation loss and the random state (Python, NumPy and
  every Keras seed generator of the model and of the augmentation layers).
  ``best.keras`` and ``best.json`` hold the epoch with the lowest validation loss (none without
  a validation split). Nothing else is kept.

Every file is written to a temporary name in the same folder and renamed. ``last.json`` records
the SHA-256 of ``last.keras``: a process killed between the two renames leaves a pair that does
not match, and resuming then falls back to ``best``.

This module imports Keras only inside the functions that touch a model, so the CLI can find and
check a run to resume without starting TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facelab.errors import FacelabError
from facelab.files import write_json

#: The run's identity and status, in its output folder.
RUN_FILE = "run.json"
#: The checkpoint folder inside the output folder.
FOLDER = "checkpoints"
#: Keras's name for the variable holding a ``SeedGenerator``'s state.
SEED_STATE = "seed_generator_state"
FINISHED = "FINISHED"
RUNNING = "RUNNING"


# --------------------------------------------------------------------------------------------
# run.json
# --------------------------------------------------------------------------------------------

def write_run_file(run, status: str = RUNNING) -> None:
    """``run.json`` for ``run`` (a :class:`facelab.run.Run`) with ``status``."""
    recipe = run.recipe
    write_json(Path(run.output_dir) / RUN_FILE, {
        "id": run.id, "name": run.name, "status": status, "started": run.started,
        "tags": dict(run.tags), "resumed_from_epoch": run.resumed_from_epoch,
        "recipe": {"name": recipe.name, "digest": recipe.digest,
                   "path": str(Path(recipe.path).resolve()) if recipe.path else None,
                   "overrides": list(recipe.overrides), "resolved": recipe.to_yaml(),
                   "source": recipe.source_text}})


def set_status(folder: Path, status: str) -> None:
    """Record the run's status in ``run.json`` (nothing when the file is missing)."""
    path = Path(folder) / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    info["status"] = status
    write_json(path, info)


@dataclass(frozen=True)
class StoredRun:
    """A run as its ``run.json`` describes it, with its recipe validated again."""

    folder: Path
    id: str
    name: str
    status: str
    started: float
    tags: dict[str, str]
    recipe: Any  # facelab.recipe.Recipe


def read_run(folder: Path) -> StoredRun:
    """The run in ``folder``; its resolved recipe is validated again with today's plugins and
    must still have the digest it had (else the error lists what resolves differently)."""
    from facelab.manager import get_registry
    from facelab.recipe import parse_yaml, validate_recipe

    folder = Path(folder)
    path = folder / RUN_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        stored = info["recipe"]
        raw = parse_yaml(stored["resolved"])
    except FileNotFoundError:
        raise FacelabError(f"--resume: {folder} has no {RUN_FILE}; not the output folder of a "
                           "facelab run that can be resumed") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FacelabError(f"--resume: cannot read {path} ({exc})") from None
    recipe = validate_recipe(raw, get_registry(), where=str(path),
                             path=Path(stored["path"]) if stored.get("path") else None,
                             overrides=tuple(stored.get("overrides", ())),
                             source_text=stored.get("source", ""))
    if recipe.digest != stored["digest"]:
        changed = recipe_differences(raw, recipe)
        raise FacelabError(f"--resume: the run's recipe resolves differently now (a plugin's "
                           f"defaults changed?): {changed or 'its digest differs'}")
    return StoredRun(folder, info["id"], info["name"], info.get("status", RUNNING),
                     float(info.get("started", 0)), dict(info.get("tags", {})), recipe)


def check_resumable(run: StoredRun) -> None:
    if run.status == FINISHED:
        raise FacelabError(f"--resume: run {run.id} already finished; nothing to resume "
                           f"({run.folder})")


def check_same_recipe(run: StoredRun, given) -> None:
    """``given`` (the RECIPE and ``--set`` of ``--resume``) must resolve to the run's recipe."""
    if given.digest == run.recipe.digest:
        return
    changed = recipe_differences(run.recipe.to_dict(), given)
    raise FacelabError(f"--resume: the recipe differs from run {run.id}'s: "
                       f"{changed or 'the resolved recipes differ'}")


def recipe_differences(old: dict, new) -> str:
    """``train.epochs (5 -> 6), model.attention.type (none -> se)``: the flat keys of the
    resolved recipe ``new`` whose values differ from the plain recipe ``old``."""
    from facelab.recipe import flatten

    before, after = dict(flatten(old)), new.flat()
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    return ", ".join(f"{k} ({_short(before.get(k))} -> {_short(after.get(k))})" for k in keys)


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def locate(ref: str, search: list[Path], hooks=None) -> Path:
    """The output folder of the run ``ref``: a folder holding ``run.json``, else a folder under
    ``search`` whose ``run.json`` has the id ``ref``, else what a plugin's ``find_run_output``
    answers (e.g. the MLflow plugin, for an MLflow run id)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / RUN_FILE).is_file():
            raise FacelabError(f"--resume: {path} has no {RUN_FILE}; not the output folder of "
                               "a facelab run that can be resumed")
        return path
    for folder in search:
        for candidate in sorted(Path(folder).expanduser().glob(f"*/{RUN_FILE}")):
            try:
                if json.loads(candidate.read_text(encoding="utf-8")).get("id") == ref:
                    return candidate.parent
            except (OSError, ValueError):
                continue
    if hooks is not None:
        found = hooks.find_run_output(run_ref=ref)
        if found is not None:
            found = Path(found)
            if not (found / RUN_FILE).is_file():
                raise FacelabError(f"--resume: run {ref}'s output folder {found} is gone or has "
                                   f"no {RUN_FILE}")
            return found
    where = ", ".join(str(f) for f in search)
    raise FacelabError(f"--resume: no run {ref!r}: not a run's output folder, not a run id in "
                       f"{where or 'the output folders'}, and no tracking plugin knows it")


@contextlib.contextmanager
def hold(folder: Path) -> Iterator[None]:
    """Hold the run folder for this process (an advisory lock the system releases when the
    process ends, even by SIGKILL): a second process resuming the same run is refused."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FacelabError(f"--resume: the run in {folder} is still running in another "
                               "process") from None
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read back: ``model`` is its ``.keras`` file."""

    epoch: int
    history: dict[str, list[float]]
    train_seconds: float
    best_epoch: int | None
    best_val_loss: float | None
    stopped: bool  # early stopping ended training after this epoch
    random: dict[str, Any]
    model: Path


def save(folder: Path, model, state: dict[str, Any], best: bool) -> None:
    """Write ``last.keras`` + ``last.json`` (``state``: epoch, history, ...), and copy them to
    ``best.*`` when ``best``."""
    checkpoints = Path(folder) / FOLDER
    checkpoints.mkdir(parents=True, exist_ok=True)
    last = checkpoints / "last.keras"
    partial = checkpoints / ".last.partial.keras"  # Keras wants the .keras suffix
    model.save(partial)
    digest = _sha256(partial)
    os.replace(partial, last)
    write_json(checkpoints / "last.json", {**state, "model": last.name, "model_sha256": digest})
    if best:
        partial = checkpoints / ".best.partial.keras"
        shutil.copyfile(last, partial)
        os.replace(partial, checkpoints / "best.keras")
        write_json(checkpoints / "best.json",
                   {**state, "model": "best.keras", "model_sha256": digest})


def clean_partials(folder: Path) -> None:
    """Remove what a process killed while writing a checkpoint left behind."""
    for path in (Path(folder) / FOLDER).glob(".*"):
        path.unlink(missing_ok=True)


def load(folder: Path) -> Checkpoint | None:
    """The newest intact checkpoint (``last``, else ``best``), or ``None``."""
    for name in ("last", "best"):
        found = _read(Path(folder) / FOLDER, name)
        if found is not None:
            return found
    return None


def load_best(folder: Path) -> Checkpoint | None:
    return _read(Path(folder) / FOLDER, "best")


def _read(folder: Path, name: str) -> Checkpoint | None:
    try:
        state = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        model = folder / state["model"]
        if _sha256(model) != state["model_sha256"]:
            return None  # killed between writing the model and its JSON
        return Checkpoint(int(state["epoch"]), state["history"], float(state["train_seconds"]),
                          state.get("best_epoch"), state.get("best_val_loss"),
                          bool(state.get("stopped")), state["random"], model)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def restore(model, checkpoint: Checkpoint, layers=()) -> None:
    """Load the checkpoint's weights and optimizer state into the compiled ``model``, and its
    random state (``layers``: the augmentation layers)."""
    model.optimizer.build(model.trainable_variables)  # so its saved variables have a place
    model.load_weights(checkpoint.model)
    set_random_state(checkpoint.random, model, layers)


# --------------------------------------------------------------------------------------------
# Random state
# --------------------------------------------------------------------------------------------

def _seed_variables(model, layers) -> list:
    """The state variables of every Keras seed generator of the model and the layers (dropout,
    random augmentations), in a fixed order. ``model.save`` does not keep them."""
    found, seen = [], set()
    for owner in (model, *layers):
        for variable in owner.variables:
            if variable.name == SEED_STATE and id(variable) not in seen:
                seen.add(id(variable))
                found.append(variable)
    return found


def _global_seed_generator():
    """Keras's global seed generator (unseeded ``keras.random`` calls), if one was made."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    except ImportError:
        return None
    return global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)


def random_state(model, layers=()) -> dict[str, Any]:
    """Python's and NumPy's global random state and every Keras seed generator's, as JSON."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    seeds = [np.asarray(v.numpy()).tolist() for v in _seed_variables(model, layers)]
    generator = _global_seed_generator()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "seed_generators": seeds,
            "keras_global": None if generator is None
            else np.asarray(generator.state.numpy()).tolist()}


def set_random_state(state: dict[str, Any], model, layers=()) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    variables = _seed_variables(model, layers)
    if len(variables) == len(state["seed_generators"]):
        for variable, value in zip(variables, state["seed_generators"]):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    generator = _global_seed_generator()
    if generator is not None and state.get("keras_global") is not None:
        generator.state.assign(np.asarray(state["keras_global"], dtype=generator.state.dtype))
