"""What a sweep is: a recipe (or several), a search space over recipe keys, a sampler, a number
of trials, an objective, a pruner and a storage, read from a sweep file or from
``facelab sweep RECIPE --grid KEY=V1,V2``. Running it is :mod:`facelab.plugins.mlflow.study`.

A sweep file (``kind: sweep``; paths relative to the file)::

    kind: sweep
    recipe: ../quickstart.yaml              # or a list: the recipe becomes a grid dimension
    set: [train.epochs=3]                   # --set overrides for every trial
    space:
      model.attention.type: {choices: [none, cbam]}         # any YAML values
      train.schedule.initial_learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
      train.batch_size: {low: 16, high: 64, step: 16}       # integers: an int range
    sampler: tpe                            # grid | random | tpe
    trials: 8                               # grid: every point (the default)
    objective: {metric: test/race/accuracy, direction: maximize}
    pruner: {type: median, warmup_epochs: 2}

A trial's values are applied as ``--set KEY=VALUE`` under the sweep's own ``set``, so a
component ``type`` that changes replaces the component (``facelab.recipe.deep_merge``).
Categorical values are kept in Optuna as their ``--set`` text, so any YAML value (a list, a
component mapping) can be a choice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from facelab import Params, field
from facelab.errors import FacelabError

#: Settings every run of a sweep must share (the parent and its children live together).
SHARED_TRACKING = ("uri", "experiment", "enabled")
#: The space key naming the recipe file, when a sweep has several.
RECIPE_KEY = "recipe"
#: The grid a sweep may enumerate at most (each point is validated and enqueued up front).
MAX_GRID = 10_000
#: Points a dry run or a start validates at most for a random or TPE sweep.
MAX_CHECKED = 256


# --------------------------------------------------------------------------------------------
# The sweep file's schema
# --------------------------------------------------------------------------------------------

class Dimension(Params):
    """One recipe key's values: ``{choices: [...]}``, or a range ``{low:, high:}`` (integers
    when both ends are integers; ``log: true`` samples on a log scale; ``step`` quantises)."""

    choices: list[Any] | None = field(None, "the values to try: any YAML value (a component "
                                            "mapping switches its type)", min_length=1)
    low: int | float | None = field(None, "lowest value of a range (included)")
    high: int | float | None = field(None, "highest value of a range (included)")
    log: bool = field(False, "sample the range on a log scale (low > 0)")
    step: int | float | None = field(None, "quantise the range to low + k * step", gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None:
            if ranged or self.log or self.step is not None:
                raise ValueError("give either choices: [...] or a range low:/high:, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected choices: [...] or a range with both low: and high:")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log: true and step: exclude each other (Optuna samples one or "
                             "the other)")
        return self

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(
            isinstance(v, int) and not isinstance(v, bool)
            for v in (self.low, self.high, *([self.step] if self.step is not None else [])))

    def grid_values(self, where: str) -> list[Any]:
        """Every value a grid takes: the choices (as ``--set`` text), an integer range, or a
        float range with a step."""
        if self.choices is not None:
            texts = [override_text(v) for v in self.choices]
            if len(set(texts)) != len(texts):
                raise FacelabError(f"{where}: a choice is listed twice")
            return texts
        if self.is_int:
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step is None:
            raise FacelabError(f"{where}: the grid sampler needs choices: [...], an integer "
                               "range or a step:; sample a continuous range with sampler: "
                               "random or tpe")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + k * self.step, 12) for k in range(count)]

    def distribution(self):
        """The Optuna distribution of this dimension (categoricals hold ``--set`` text)."""
        from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                          IntDistribution)

        if self.choices is not None:
            return CategoricalDistribution([override_text(v) for v in self.choices])
        if self.is_int:
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return FloatDistribution(float(self.low), float(self.high), log=self.log,
                                 step=None if self.step is None else float(self.step))


class Objective(Params):
    """What a trial returns to Optuna: one final metric of its run."""

    metric: str | None = field(None, "a final metric name (facelab.results.metric_name), e.g. "
                                     "test/race/accuracy; default: the first task's test "
                                     "accuracy, or validation accuracy without a test split")
    direction: Literal["maximize", "minimize"] = field("maximize", "maximize or minimize it")


class Pruner(Params):
    """Stopping hopeless trials early, on a per-epoch validation metric."""

    type: Literal["none", "median", "threshold"] = field(
        "none", "none; median (Optuna's MedianPruner: below the median of earlier trials at "
                "the same epoch); threshold (outside lower/upper)")
    metric: str | None = field(None, "the per-epoch metric reported to Optuna, e.g. "
                                     "epoch/val/race/accuracy (default: the objective's task's "
                                     "validation accuracy, or loss for a loss objective)")
    warmup_epochs: int = field(1, "epochs every trial trains before it can be pruned", ge=0,
                               le=10_000)
    startup_trials: int = field(2, "median: trials that finish before pruning starts", ge=0,
                                le=10_000)
    lower: float | None = field(None, "threshold: prune below this value")
    upper: float | None = field(None, "threshold: prune above this value")

    @model_validator(mode="after")
    def _bounds(self) -> Pruner:
        if self.type == "threshold" and self.lower is None and self.upper is None:
            raise ValueError("type: threshold needs lower: or upper:")
        if self.type != "threshold" and (self.lower is not None or self.upper is not None):
            raise ValueError("lower: and upper: belong to type: threshold")
        return self


class Heartbeat(Params):
    """How a dead worker's trial is found: every running trial records a heartbeat; one silent
    for ``grace`` seconds is failed and enqueued again for a live worker (Optuna's RDB heartbeat
    and ``RetryHeartbeatStaleTrialCallback``)."""

    interval: int = field(60, "seconds between a running trial's heartbeats", ge=1, le=86_400)
    grace: int = field(180, "seconds without a heartbeat after which a trial is failed and "
                            "retried", ge=1, le=864_000)
    max_retry: int = field(3, "times one trial may be retried", ge=0, le=1000)

    @model_validator(mode="after")
    def _grace_covers_interval(self) -> Heartbeat:
        if self.grace <= self.interval:
            raise ValueError(f"grace ({self.grace} s) must exceed interval ({self.interval} s), "
                             "or live trials would be failed")
        return self


class SweepFile(Params):
    """A sweep file (``recipes/sweeps/*.yaml``)."""

    kind: Literal["sweep"] = field(..., "marks the file as a sweep (not a recipe)")
    recipe: str | list[str] = field(..., "the recipe file (relative to this file), or several: "
                                         "each becomes a value of the grid key `recipe`")
    set: list[str] = field([], "--set overrides applied to every trial, under its values")
    space: dict[str, Dimension] = field({}, "recipe key -> its values or range")
    sampler: Literal["grid", "random", "tpe"] = field("grid", "grid (every point once), "
                                                              "random or tpe (Optuna's samplers)")
    seed: int = field(0, "sampler seed; trial k samples with seed + k", ge=0, le=2**31 - 1)
    trials: int | None = field(None, "trials in the study (grid: its size, the default)", ge=1,
                               le=MAX_GRID)
    objective: Objective = field(Objective(), "the metric Optuna optimises")
    pruner: Pruner = field(Pruner(), "stopping hopeless trials after an epoch")
    storage: str | None = field(None, "Optuna storage URL (default: optuna.db beside the "
                                      "MLflow store); --storage wins")
    study: str | None = field(None, "study name (default: the sweep's name and hash); "
                                    "--study wins")
    heartbeat: Heartbeat = field(Heartbeat(), "dead-worker detection and retry")


# --------------------------------------------------------------------------------------------
# A resolved sweep
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sweep:
    """A sweep ready to run: recipe files, space, sampler, budget, objective, storage."""

    name: str  # "quickstart" (recipes) or the sweep file's stem
    recipes: tuple[Path, ...]
    space: dict[str, Dimension]
    overrides: tuple[str, ...] = ()
    sampler: str = "grid"
    seed: int = 0
    trials: int | None = None
    objective: Objective = Objective()
    pruner: Pruner = Pruner()
    storage: str | None = None
    study: str | None = None
    heartbeat: Heartbeat = Heartbeat()
    source: Path | None = None
    #: the recipe files as written (the sweep file's relative paths): the values of the grid
    #: key ``recipe``, the same on every machine
    recipe_names: tuple[str, ...] = ()

    @property
    def recipe_values(self) -> list[str]:
        return list(self.recipe_names) or [str(p) for p in self.recipes]

    @property
    def dimensions(self) -> dict[str, Dimension]:
        """The space with the recipe file first when there are several recipes."""
        if len(self.recipes) == 1:
            return dict(self.space)
        files = Dimension(choices=self.recipe_values)
        return {RECIPE_KEY: files, **self.space}

    @property
    def where(self) -> str:
        return str(self.source) if self.source else "facelab sweep"

    def grid(self) -> list[dict[str, Any]]:
        """Every point of the grid, in order: the last key varies fastest."""
        dims = self.dimensions
        values = [d.grid_values(f"{self.where}: space.{k}") for k, d in dims.items()]
        size = math.prod(len(v) for v in values)
        if size > MAX_GRID:
            raise FacelabError(f"{self.where}: the grid has {size} points, more than "
                               f"{MAX_GRID}; sample it with sampler: random or tpe")
        return [dict(zip(dims, combo)) for combo in itertools.product(*values)]

    def size(self) -> int:
        """The number of trials the study holds when complete."""
        if self.sampler == "grid":
            return len(self.grid())
        return self.trials or 0

    def recipe_path(self, point: dict[str, Any]) -> Path:
        if RECIPE_KEY not in point:
            return self.recipes[0]
        texts = [override_text(v) for v in self.recipe_values]  # as the grid holds them
        return self.recipes[texts.index(point[RECIPE_KEY])]

    def point_overrides(self, point: dict[str, Any]) -> list[str]:
        """``KEY=VALUE`` for each of a point's values (the recipe file excluded)."""
        return [f"{k}={value_text(v)}" for k, v in point.items() if k != RECIPE_KEY]

    def load(self, point: dict[str, Any], load: Callable[..., Any] | None = None):
        """The point's recipe: the file, the sweep's ``set``, then the point's values."""
        if load is None:
            from facelab.recipe import load_recipe as load
        return load(self.recipe_path(point), (*self.overrides, *self.point_overrides(point)))

    def label(self, recipe_name: str, point: dict[str, Any]) -> str:
        """``quickstart[attention=cbam,initial_learning_rate=0.00316]``: a trial's run name."""
        from facelab.run import run_label

        shown = [f"{k}={value_text(v, short=True)}" for k, v in point.items() if k != RECIPE_KEY]
        return run_label(recipe_name, shown)

    def digest(self) -> str:
        """Identical on every machine given the same sweep (recipe names, not absolute paths);
        storage, study name and heartbeat settings are left out."""
        key = json.dumps({
            "recipes": [p.name for p in self.recipes],
            "space": {k: d.model_dump(mode="json") for k, d in self.space.items()},
            "set": list(self.overrides), "sampler": self.sampler, "seed": self.seed,
            "trials": self.trials, "objective": self.objective.model_dump(mode="json"),
            "pruner": self.pruner.model_dump(mode="json")}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    def study_name(self) -> str:
        return self.study or f"{self.name}-{self.digest()}"


def value_text(value: Any, short: bool = False) -> str:
    """A trial value as ``--set`` text (categoricals already are); ``short`` rounds floats for
    run names."""
    if isinstance(value, float):
        return f"{value:.3g}" if short else repr(value)
    return str(value)


def override_text(value: Any) -> str:
    """A YAML value as the text ``--set`` parses back to it: ``cbam``, ``[48, 48]``,
    ``{type: smote, k_neighbors: 3}``, ``'yes'`` (quoted where YAML would read it otherwise)."""
    import yaml

    text = yaml.safe_dump([value], default_flow_style=True, width=1 << 20,
                          sort_keys=False).strip()
    return text[1:-1]  # the one-item flow list's brackets


# --------------------------------------------------------------------------------------------
# Reading a sweep: a sweep file, or recipes with --grid
# --------------------------------------------------------------------------------------------

def is_sweep_file(path: Path) -> bool:
    """A YAML file whose top level says ``kind: sweep`` (a recipe has no ``kind``); a file that
    cannot be read is a one-line error either way."""
    from facelab.recipe import _read_yaml

    return _read_yaml(Path(path)).get("kind") == "sweep"


def load_sweep_file(path: Path, overrides: Sequence[str] = ()) -> Sweep:
    """Read and validate a sweep file; errors name the file and the key."""
    from facelab.recipe import _read_yaml
    from facelab.registry import validate_params

    path = Path(path)
    spec = validate_params(SweepFile, _read_yaml(path), str(path))
    recipes = [spec.recipe] if isinstance(spec.recipe, str) else list(spec.recipe)
    if not recipes:
        raise FacelabError(f"{path}: recipe: expected a recipe file or a list of them")
    paths = []
    for i, name in enumerate(recipes):
        where = f"{path}: recipe" + (f".{i}" if isinstance(spec.recipe, list) else "")
        resolved = Path(name).expanduser()
        resolved = Path(os.path.normpath(resolved if resolved.is_absolute()
                                         else path.parent / resolved))
        if not resolved.is_file():
            raise FacelabError(f"{where}: {name} is not a file (paths are relative to the "
                               "sweep file)")
        paths.append(resolved)
    if RECIPE_KEY in spec.space:
        raise FacelabError(f"{path}: space.{RECIPE_KEY}: list the recipe files under recipe: "
                           "instead")
    if not spec.space and len(paths) == 1:
        raise FacelabError(f"{path}: space: expected at least one recipe key to vary")
    sweep = Sweep(name=path.stem, recipes=tuple(paths), space=dict(spec.space),
                  overrides=(*spec.set, *overrides), sampler=spec.sampler, seed=spec.seed,
                  trials=spec.trials, objective=spec.objective, pruner=spec.pruner,
                  storage=spec.storage, study=spec.study, heartbeat=spec.heartbeat,
                  source=path, recipe_names=tuple(recipes))
    check_budget(sweep)
    return sweep


def sweep_from_grid(recipes: Sequence[Path], grid_specs: Sequence[str],
                    overrides: Sequence[str] = ()) -> Sweep:
    """``facelab sweep RECIPES --grid KEY=V1,V2 ...``: a grid sweep (values as ``--set`` text)."""
    if not recipes:
        raise FacelabError("expected a sweep file or at least one recipe")
    space = {key: Dimension(choices=values) for key, values in parse_grid_values(grid_specs)}
    if not space and len(recipes) == 1:
        raise FacelabError("nothing to sweep: give --grid KEY=V1,V2 or several recipes")
    names = list(dict.fromkeys(Path(p).stem for p in recipes))
    return Sweep(name="+".join(names), recipes=tuple(Path(p) for p in recipes), space=space,
                 overrides=tuple(overrides))


def parse_grid_values(specs: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """:func:`parse_grid` with each value read as ``--set`` reads it (YAML)."""
    import yaml

    from facelab.recipe import parse_yaml

    out = []
    for key, texts in parse_grid(specs):
        values = []
        for text in texts:
            try:
                values.append(parse_yaml(text))
            except yaml.YAMLError as exc:
                raise FacelabError(f"--grid {key}={','.join(texts)}: {text!r} is not valid YAML "
                                   f"({str(exc).splitlines()[0]})") from None
        out.append((key, values))
    return out


def check_budget(sweep: Sweep) -> None:
    where = sweep.where
    if sweep.sampler == "grid":
        size = len(sweep.grid())
        if sweep.trials is not None and sweep.trials != size:
            raise FacelabError(f"{where}: trials: {sweep.trials}, but the grid has {size} "
                               "points and runs each once; leave trials out")
    elif sweep.trials is None:
        raise FacelabError(f"{where}: trials: expected the number of trials for sampler "
                           f"{sweep.sampler}, e.g. trials: 20")


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
        if key == RECIPE_KEY:
            raise FacelabError(f"{where}: give several recipe files instead")
        grid.append((key, values))
    return grid


# --------------------------------------------------------------------------------------------
# Validation before any trial
# --------------------------------------------------------------------------------------------

def checked_points(sweep: Sweep) -> list[dict[str, Any]]:
    """The points validated before a sweep starts: every grid point; for random and TPE every
    combination of choices with each range at its low end, then at its high end (at most
    :data:`MAX_CHECKED`)."""
    if sweep.sampler == "grid":
        return sweep.grid()
    dims = sweep.dimensions
    categorical = {k: d.grid_values(k) for k, d in dims.items() if d.choices is not None}
    ranges = {k: d for k, d in dims.items() if d.choices is None}
    points = []
    for combo in itertools.product(*categorical.values()):
        for end in ("low", "high"):
            point = dict(zip(categorical, combo))
            point.update({k: getattr(d, end) if d.is_int else float(getattr(d, end))
                          for k, d in ranges.items()})
            points.append({k: point[k] for k in dims})
            if not ranges:
                break
        if len(points) >= MAX_CHECKED:
            break
    return points[:MAX_CHECKED]


def validate(sweep: Sweep, points: Sequence[dict[str, Any]],
             load: Callable[..., Any] | None = None) -> list[Any]:
    """Load and validate every point's recipe; they must share tracking and know the objective's
    task. Returns the recipes."""
    recipes = []
    for i, point in enumerate(points):
        try:
            recipes.append(sweep.load(point, load))
        except FacelabError as exc:
            values = ", ".join(sweep.point_overrides(point)) or str(sweep.recipe_path(point))
            raise FacelabError(f"{sweep.where}: point {i} ({values}): {exc}") from None
    first = recipes[0].schema.tracking
    for i, recipe in enumerate(recipes):
        tracking = recipe.schema.tracking
        if not tracking.enabled:
            raise FacelabError(f"{recipe.path}: tracking.enabled is false; a sweep's runs "
                               "are compared in MLflow, so tracking must be on")
        for key in SHARED_TRACKING:
            if getattr(tracking, key) != getattr(first, key):
                raise FacelabError(
                    f"{sweep.where}: point {i}: tracking.{key} is {getattr(tracking, key)!r} "
                    f"but {getattr(first, key)!r} elsewhere; every run of a sweep must share "
                    f"tracking.{key}")
        objective_task(sweep, recipe)
        pruning_metric(sweep, recipe)
    return recipes


def objective_task(sweep: Sweep, recipe) -> str:
    """The task the objective measures (checked against the recipe's tasks)."""
    from facelab.errors import did_you_mean
    from facelab.results import parse_metric_name

    metric = sweep.objective.metric
    if metric is None:
        return recipe.tasks[0]
    parsed = parse_metric_name(metric)
    where = f"{sweep.where}: objective.metric"
    if parsed is None or parsed.kind == "epoch":
        raise FacelabError(f"{where}: {metric!r} is not a final metric name; expected e.g. "
                           f"test/{recipe.tasks[0]}/accuracy, val/{recipe.tasks[0]}/f1_macro "
                           "or efficiency/fps")
    if parsed.kind == "final" and parsed.task not in recipe.tasks:
        raise FacelabError(f"{where}: {did_you_mean(parsed.task, recipe.tasks, what='task')}")
    return parsed.task or recipe.tasks[0]


def pruning_metric(sweep: Sweep, recipe) -> str | None:
    """The per-epoch metric a trial reports (``epoch/val/<task>/accuracy``); ``None`` without a
    pruner. A median pruner's metric must improve in the objective's direction."""
    from facelab.results import epoch_metric_name, parse_metric_name

    pruner = sweep.pruner
    if pruner.type == "none":
        return None
    task = objective_task(sweep, recipe)
    where = f"{sweep.where}: pruner.metric"
    if pruner.metric is not None:
        parsed = parse_metric_name(pruner.metric)
        if parsed is None or parsed.kind != "epoch":
            raise FacelabError(f"{where}: {pruner.metric!r} is not a per-epoch metric name; "
                               f"expected e.g. {epoch_metric_name('val', 'accuracy', task)}")
        metric = pruner.metric
    else:
        objective = parse_metric_name(sweep.objective.metric or "") if sweep.objective.metric \
            else None
        loss = objective is not None and objective.metric == "loss"
        metric = epoch_metric_name("val", "loss" if loss else "accuracy", task)
    minimise = parse_metric_name(metric).metric.endswith("loss")
    if pruner.type == "median" and minimise != (sweep.objective.direction == "minimize"):
        raise FacelabError(f"{where}: {metric} improves the other way from the objective "
                           f"({sweep.objective.direction}); the median pruner compares them "
                           "in one direction: pick a metric that does")
    return metric
