"""Sweeps: every combination of a grid of overrides (times one or more recipes), each a normal
tracked run nested under one parent run; ``--shard i/n`` splits the grid across machines.

    facelab sweep recipes/quickstart.yaml \\
        --grid model.attention.type=none,cbam --grid data.balancer.type=none,oversample

Combinations are ordered recipes first, then the grid keys in the order given (the last key
varies fastest), and numbered from 0. Shard ``i/n`` (1-based) runs the combinations whose number
``k`` has ``k % n == i - 1``, so machines sharing a tracking server split the work without
talking to each other. Every run of a sweep carries the tag ``facelab.sweep_id``, a hash of the
recipes, grid and ``--set`` overrides, which is the same on every shard.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError

#: Settings every run of a sweep must share (the parent and its children live together).
SHARED_TRACKING = ("uri", "experiment", "enabled")


@dataclass(frozen=True)
class Combination:
    """One point of the sweep: a recipe file plus grid overrides."""

    index: int
    recipe_path: Path
    overrides: tuple[str, ...]

    def label(self, recipe_name: str) -> str:
        """``quickstart[attention=cbam,balancer=smote]``: the child's run name."""
        from facelab.run import run_label

        return run_label(recipe_name, self.overrides)


@dataclass
class ChildResult:
    combination: Combination
    name: str
    status: str  # FINISHED, FAILED
    run_id: str | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: the child's whole result (finished children only)
    result: Any = None


@dataclass
class SweepResult:
    sweep_id: str
    parent_run_id: str | None
    children: list[ChildResult]

    @property
    def failed(self) -> list[ChildResult]:
        return [c for c in self.children if c.status != "FINISHED"]


class SweepFailed(Exception):
    """Some children failed; the parent run ends FAILED and the CLI exits 1."""

    def __init__(self, result: SweepResult):
        self.result = result
        names = ", ".join(c.name for c in result.failed)
        super().__init__(f"{len(result.failed)} of {len(result.children)} runs failed: {names}")


def split_values(text: str) -> list[str]:
    """``none,cbam`` -> [none, cbam]; commas inside [...], {...} or quotes do not split, so
    ``[24,24],[48,48]`` gives two values."""
    values, depth, quote, current = [], 0, None, []
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    values.append("".join(current).strip())
    return values


def parse_grid(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["model.attention.type=none,cbam", ...]`` -> ``[("model.attention.type", [...]), ...]``."""
    grid: list[tuple[str, list[str]]] = []
    for spec in specs:
        where = f"--grid {spec}"
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FacelabError(f"{where}: expected KEY=VALUE1,VALUE2,..., "
                               "e.g. model.attention.type=none,cbam")
        values = split_values(text)
        if any(v == "" for v in values):
            raise FacelabError(f"{where}: empty value in {text!r}")
        if len(set(values)) != len(values):
            raise FacelabError(f"{where}: repeated value in {text!r}")
        if any(k == key for k, _ in grid):
            raise FacelabError(f"{where}: {key} is already a grid key; give its values once, "
                               "separated by commas")
        grid.append((key, values))
    return grid


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3); None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        index, _, count = text.partition("/")
        i, n = int(index), int(count)
    except ValueError:
        i, n = 0, 0
    if not (n >= 1 and 1 <= i <= n):
        raise FacelabError(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 1/2")
    return i, n


def combinations(recipes: Sequence[Path], grid: Sequence[tuple[str, list[str]]]
                 ) -> list[Combination]:
    """All combinations, recipes first, the grid's last key varying fastest."""
    keys = [k for k, _ in grid]
    out = []
    for path, values in itertools.product(recipes, itertools.product(*(v for _, v in grid))):
        overrides = tuple(f"{k}={v}" for k, v in zip(keys, values))
        out.append(Combination(len(out), Path(path), overrides))
    return out


def shard(combos: Sequence[Combination], index: int, count: int) -> list[Combination]:
    return [c for c in combos if c.index % count == index - 1]


def sweep_id(recipes: Sequence[Path], grid: Sequence[tuple[str, list[str]]],
             overrides: Sequence[str]) -> str:
    """Identical on every machine given the same command (recipe names, not absolute paths)."""
    key = json.dumps({"recipes": [Path(p).name for p in recipes], "grid": grid,
                      "set": list(overrides)}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def validate(combos: Sequence[Combination], overrides: Sequence[str],
             load: Callable[..., Any] | None = None) -> list[Any]:
    """Load and validate every combination before any run starts; they must share tracking."""
    if load is None:
        from facelab.recipe import load_recipe as load
    recipes = []
    for combo in combos:
        try:
            recipes.append(load(combo.recipe_path, (*overrides, *combo.overrides)))
        except FacelabError as exc:
            raise FacelabError(f"combination {combo.index} ({', '.join(combo.overrides) or 'no grid'}"
                               f"): {exc}") from None
    first = recipes[0].schema.tracking
    for combo, recipe in zip(combos, recipes):
        tracking = recipe.schema.tracking
        if not tracking.enabled:
            raise FacelabError(f"{combo.recipe_path}: tracking.enabled is false; a sweep's runs "
                               "are compared in MLflow, so tracking must be on")
        for key in SHARED_TRACKING:
            if getattr(tracking, key) != getattr(first, key):
                raise FacelabError(
                    f"combination {combo.index}: tracking.{key} is {getattr(tracking, key)!r} "
                    f"but {getattr(first, key)!r} elsewhere; every run of a sweep must share "
                    f"tracking.{key}")
    return recipes


def run_sweep(recipe_paths: Sequence[Path], grid_specs: Sequence[str],
              overrides: Sequence[str] = (), shard_spec: str | None = None,
              run: Callable[..., Any] | None = None,
              on_start: Callable[[int, int, str], None] | None = None) -> SweepResult:
    """Validate every combination, then run this shard's under one parent run.

    ``run(recipe, name=..., tags=...)`` runs one child (default:
    :func:`facelab.runner.run_recipe`) and returns its :class:`facelab.results.RunResult`;
    ``on_start(position, total, name)`` is told before each child. Ordinary errors in a child
    are recorded and the sweep goes on; Ctrl-C and SIGTERM stop it (parent and child KILLED).
    Raises :class:`SweepFailed` at the end if any child failed.
    """
    from facelab.plugins.mlflow import comparison, tracking
    from facelab.run import git_tags
    from facelab.errors import RunTerminated
    from facelab.signals import stop_on_signals

    if not recipe_paths:
        raise FacelabError("expected at least one recipe")
    grid = parse_grid(grid_specs)
    index, count = parse_shard(shard_spec)
    every = combinations(recipe_paths, grid)
    recipes = validate(every, overrides)
    mine = shard(every, index, count)
    sid = sweep_id(recipe_paths, grid, overrides)
    if run is None:
        from facelab.runner import run_recipe as run

    first = recipes[0].schema.tracking
    tracking.check_store(first.uri)  # before any work: one line naming the store if it is down
    names = list(dict.fromkeys(r.name for r in recipes))
    title = "+".join(names) + " sweep" + (f" {index}/{count}" if count > 1 else "")
    started = tracking.start(title, {
        "facelab.sweep_id": sid, "facelab.sweep_role": "parent",
        "facelab.sweep_shard": f"{index}/{count}", "facelab.recipe": names[0],
        "facelab.version": _version(), **git_tags(recipe_paths[0])},
        None, first.uri, first.experiment, False)
    parent = _Parent(started.info.run_id)
    result = SweepResult(sid, parent.run_id, [])
    with stop_on_signals():
        try:
            parent.call(tracking.log_params, {
                "sweep.recipes": ", ".join(str(p) for p in recipe_paths),
                **{f"sweep.grid.{k}": ",".join(v) for k, v in grid},
                "sweep.set": " ".join(overrides), "sweep.shard": f"{index}/{count}",
                "sweep.combinations": len(every), "sweep.runs_in_shard": len(mine)})
            for position, combo in enumerate(mine, 1):
                recipe = recipes[combo.index]
                name = combo.label(recipe.name)
                if on_start:
                    on_start(position, len(mine), name)
                result.children.append(_run_child(run, recipe, name, combo, sid, parent))
            parent.call(tracking.log_metrics, {
                "runs_finished": len(result.children) - len(result.failed),
                "runs_failed": len(result.failed)})
            parent.call(_log_summary, result, every, grid)
            parent.call(comparison.log, [(c.name, c.result) for c in result.children
                                         if c.result is not None and hasattr(c.result, "history")])
        except KeyboardInterrupt:
            parent.call(tracking.finish, parent.run_id, "KILLED", "interrupted (Ctrl-C)", None)
            raise
        except RunTerminated:
            parent.call(tracking.finish, parent.run_id, "KILLED", "terminated (SIGTERM)", None)
            raise
        except BaseException as exc:
            parent.call(tracking.finish, parent.run_id, "FAILED",
                        f"{type(exc).__name__}: {exc}", None)
            raise
    if result.failed:
        failed = SweepFailed(result)
        parent.call(tracking.finish, parent.run_id, "FAILED", f"SweepFailed: {failed}", None)
        raise failed
    parent.call(tracking.finish, parent.run_id, "FINISHED", None, None)
    return result


class _Parent:
    """The sweep's parent MLflow run. If the store fails, the parent goes offline (one line on
    stderr) and the sweep goes on: each child keeps what it could not log for `facelab sync`;
    the parent's summary and comparison are lost."""

    def __init__(self, run_id: str):
        self.run_id, self.offline = run_id, False

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.offline:
            return None
        try:
            return fn(*args)
        except FacelabError:
            raise
        except Exception as exc:  # a tracking failure (interruptions are not Exceptions)
            from rich.console import Console
            from rich.text import Text

            from facelab.plugins.mlflow import pending, tracking

            self.offline = True
            tracking.detach_active_run(self.run_id)
            Console(stderr=True, soft_wrap=True).print(Text(
                f"warning: MLflow tracking offline for the sweep's parent run {self.run_id} "
                f"({pending.short_error(exc)}); the sweep goes on, its summary and comparison "
                "are not logged; each child keeps its own (see `facelab sync`)",
                style="yellow"), highlight=False)
            return None


def _run_child(run: Callable[..., Any], recipe, name: str, combo: Combination, sid: str,
               parent: _Parent) -> ChildResult:
    """One child run; an ordinary error is recorded, Ctrl-C and SIGTERM propagate."""
    child = ChildResult(combo, name, "FAILED")
    tags = {"facelab.sweep_id": sid, "facelab.sweep_role": "child",
            "facelab.sweep_index": str(combo.index),
            "facelab.sweep_combination": ", ".join(combo.overrides) or recipe.name}
    try:
        outcome = run(recipe, name=name, tags=tags)
    except Exception as exc:
        child.error = f"{type(exc).__name__}: {exc}"
        child.run_id = parent.call(_last_child, parent.run_id, combo.index)
    else:
        child.status = "FINISHED"
        child.run_id = outcome.references.get("MLflow run")
        child.metrics = outcome.headline()
        child.result = outcome
    return child


def _version() -> str:
    from facelab import __version__

    return __version__


def _last_child(parent_id: str, index: int) -> str | None:
    """The run id of a failed child, if its run was created (data errors fail before)."""
    import mlflow

    runs = mlflow.search_runs(
        filter_string=(f"tags.mlflow.parentRunId = '{parent_id}' and "
                       f"tags.`facelab.sweep_index` = '{index}'"),
        search_all_experiments=True, output_format="list", max_results=1)
    return runs[0].info.run_id if runs else None


def _log_summary(result: SweepResult, every: list[Combination], grid) -> None:
    import mlflow

    rows = [{"index": c.combination.index, "name": c.name, "status": c.status,
             "run_id": c.run_id, "recipe": str(c.combination.recipe_path),
             "overrides": list(c.combination.overrides), "error": c.error, **c.metrics}
            for c in result.children]
    mlflow.log_dict({"sweep_id": result.sweep_id, "grid": dict(grid),
                     "combinations": len(every), "runs": rows}, "sweep/sweep.json")
