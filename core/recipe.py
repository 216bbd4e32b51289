"""Recipes: YAML -> ``extends`` deep-merge -> ``--set`` overrides -> validation -> a frozen recipe.

Every error is a :class:`FacelabError` naming the recipe file and the key path.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
import importlib.util
import inspect
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from facelab.errors import FacelabError, did_you_mean
from facelab.params import Params, field
from facelab.registry import Component, Registry, validate_params

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-3``) as floats.

    PyYAML follows YAML 1.1, where ``1e-3`` is a string; YAML 1.2 and every recipe author read it
    as a number.
    """


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------------------------
# The recipe schema (everything but the components, which each plugin validates itself)
# --------------------------------------------------------------------------------------------

class DataSection(Params):
    dataset: dict[str, Any] | None = field(None, "one dataset component")
    datasets: dict[str, dict[str, Any]] | None = field(
        None, "several sources: name -> dataset component, merged into one sample table")
    detector: dict[str, Any] = field(..., "face detector / cropper component")
    split: dict[str, Any] = field({"type": "stratified"},
                                  "split component: train/validation/test protocol")
    balancer: dict[str, Any] = field({"type": "none"}, "class balancer component (training only)")
    balance_on: str | None = field(None, "task whose classes are balanced (default: stratify)")
    augment: list[dict[str, Any]] = field([], "augmentation components, applied in order")
    cache_dir: str = field("~/.cache/facelab", "folder for generated data and the crop cache")


class ModelSection(Params):
    backbone: dict[str, Any] = field(..., "backbone component")
    attention: dict[str, Any] = field({"type": "none"}, "attention component after the backbone")
    heads: dict[str, dict[str, Any]] = field(..., "task name -> head component")


class KerasObject(Params):
    """``{type: <Keras name>, ...constructor arguments}``, checked against the constructor."""

    model_config = Params.model_config | {"extra": "allow"}
    type: str = field(..., "Keras class or alias, e.g. adam, sgd, exponential-decay")


class TrainSection(Params):
    epochs: int = field(10, "training epochs", ge=1)
    batch_size: int = field(32, "training batch size", ge=1)
    optimizer: KerasObject = field(KerasObject(type="adam"), "a keras.optimizers class and args")
    schedule: KerasObject | None = field(
        None, "a keras.optimizers.schedules class and args; sets the optimizer's learning rate")
    loss: dict[str, Any] = field(..., "loss component")
    early_stopping: int | None = field(None, "stop after this many epochs without val improvement",
                                       ge=1)
    steps_per_epoch: int | None = field(None, "limit batches per epoch (default: the whole set)",
                                        ge=1)


class EvaluateSection(Params):
    batch_size: int = field(64, "batch size for evaluation and timing", ge=1)
    figures: bool = field(True, "draw PNG figures")
    timing_batches: int = field(5, "batches timed for ms/image and FPS", ge=1)
    groups: list[str] = field([], "extra columns to report per-group accuracy over, e.g. gender")
    examples: int = field(16, "images per correct/wrong example grid", ge=0)


class TrackingSection(Params):
    experiment: str = field("facelab", "experiment name in the tracking store")
    uri: str | None = field(None, "tracking store URI (default: the tracking plugin's own)")
    run_name: str | None = field(None, "run name (default: the recipe name)")
    enabled: bool = field(True, "track the run (tracking plugins log nothing when false)")
    log_model: bool = field(True, "log the trained model")
    system_metrics: bool = field(False, "log CPU/GPU/memory system metrics")
    tags: dict[str, str] = field({}, "extra run tags")


class RecipeSchema(Params):
    name: str = field(..., "recipe name", min_length=1)
    description: str = field("", "what this recipe is for")
    paper: str | None = field(None, "the paper this recipe reproduces")
    seed: int = field(42, "global seed")
    output_dir: str = field("runs", "folder for run outputs (figures, reports)")
    data: DataSection = field(..., "data section")
    model: ModelSection = field(..., "model section")
    train: TrainSection = field(..., "training section")
    evaluate: EvaluateSection = field(EvaluateSection(), "evaluation section")
    tracking: TrackingSection = field(TrackingSection(), "experiment tracking, read by tracking plugins")


SECTIONS = ("name", "description", "paper", "seed", "output_dir", "data", "model", "train",
            "evaluate", "tracking")


# --------------------------------------------------------------------------------------------
# Resolved recipe
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComponentSpec:
    """A validated component: where it sits in the recipe, its registry entry and parameters."""

    where: str
    component: Component
    params: Params

    @property
    def name(self) -> str:
        return self.component.name

    def build(self, *args: Any) -> Any:
        return self.component.factory(self.params, *args)

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.component.name, **self.params.model_dump(mode="json")}


@dataclass(frozen=True)
class Recipe:
    """A resolved, validated recipe."""

    path: Path | None
    schema: RecipeSchema
    datasets: dict[str, ComponentSpec]
    detector: ComponentSpec
    split: ComponentSpec
    balancer: ComponentSpec
    augment: tuple[ComponentSpec, ...]
    backbone: ComponentSpec
    attention: ComponentSpec
    heads: dict[str, ComponentSpec]
    loss: ComponentSpec
    overrides: tuple[str, ...] = ()
    source_text: str = ""

    @property
    def name(self) -> str:
        return self.schema.name

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    @property
    def stratify(self) -> str:
        return getattr(self.split.params, "stratify", None) or self.tasks[0]

    @property
    def balance_on(self) -> str:
        return self.schema.data.balance_on or self.stratify

    def to_dict(self) -> dict[str, Any]:
        """The whole resolved recipe, every default filled in, as plain data."""
        out = self.schema.model_dump(mode="json")
        data, model = out["data"], out["model"]
        if list(self.datasets) == ["default"]:
            data["dataset"] = self.datasets["default"].as_dict()
            del data["datasets"]
        else:
            data["datasets"] = {k: v.as_dict() for k, v in self.datasets.items()}
            del data["dataset"]
        data["detector"] = self.detector.as_dict()
        data["split"] = self.split.as_dict()
        data["balancer"] = self.balancer.as_dict()
        data["augment"] = [a.as_dict() for a in self.augment]
        model["backbone"] = self.backbone.as_dict()
        model["attention"] = self.attention.as_dict()
        model["heads"] = {k: v.as_dict() for k, v in self.heads.items()}
        out["train"]["loss"] = self.loss.as_dict()
        ordered = {k: out[k] for k in SECTIONS if k in out}
        return {k: v for k, v in ordered.items() if v is not None}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def flat(self) -> dict[str, Any]:
        """The resolved recipe flattened to dot keys (for tracking params)."""
        return dict(flatten(self.to_dict()))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:12]


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            yield from flatten(item, f"{prefix}.{i}")
    else:
        yield prefix, value


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_recipe(path: str | Path, overrides: Sequence[str] = (), registry: Registry | None = None,
                ) -> Recipe:
    """Read, merge, override, expand and validate a recipe file."""
    from facelab.manager import get_registry

    path = Path(path)
    raw = _read_with_extends(path, chain=())
    raw = apply_overrides(raw, overrides)
    where = str(path)
    raw = _expand(raw, where, ())
    return validate_recipe(raw, registry or get_registry(), where=where, path=path,
                           overrides=tuple(overrides), source_text=_read_text(path))


def validate_recipe(raw: Any, registry: Registry, *, where: str = "<recipe>",
                    path: Path | None = None, overrides: tuple[str, ...] = (),
                    source_text: str = "") -> Recipe:
    if not isinstance(raw, dict):
        raise FacelabError(f"a recipe must be a mapping of sections, got {type(raw).__name__}",
                           where=where)
    for key in raw:
        if key not in SECTIONS:
            raise FacelabError(f"{key}: {did_you_mean(str(key), SECTIONS, what='section')}",
                               where=where)
    schema = _prefix_errors(lambda: validate_params(RecipeSchema, raw, ""), where)
    data, model, train = schema.data, schema.model, schema.train

    def component(kind: str, value: Any, key: str) -> ComponentSpec:
        return _prefix_errors(lambda: resolve_component(registry, kind, value, key), where)

    if (data.dataset is None) == (data.datasets is None):
        raise FacelabError("data: expected exactly one of 'dataset' (one source) or 'datasets' "
                           "(name -> dataset, several sources)", where=where)
    split = component("split", _split_value(data.split, where), "data.split")
    if data.dataset is not None:
        datasets = {"default": component("dataset", data.dataset, "data.dataset")}
    else:
        if not data.datasets:
            raise FacelabError("data.datasets: expected at least one source", where=where)
        datasets = {name: component("dataset", spec, f"data.datasets.{name}")
                    for name, spec in data.datasets.items()}
    for source in getattr(split.params, "by_source", {}):
        if source not in datasets:
            raise FacelabError(
                f"data.split.by_source.{source}: {did_you_mean(source, datasets, what='source')}",
                where=where)
    if not model.heads:
        raise FacelabError("model.heads: expected at least one task, e.g. {race: {type: ...}}",
                           where=where)
    tasks = list(model.heads)
    for key, value in (("data.split.stratify", getattr(split.params, "stratify", None)),
                       ("data.balance_on", data.balance_on)):
        if value is not None and value not in tasks:
            raise FacelabError(f"{key}: {did_you_mean(value, tasks, what='task')} "
                               "(tasks are the keys of model.heads)", where=where)
    # with a schedule, the optimizer's learning_rate is the schedule (see compile_model)
    supplied = ("learning_rate",) if train.schedule is not None else ()
    _prefix_errors(lambda: check_keras_object("optimizer", train.optimizer, "train.optimizer",
                                              supplied), where)
    if train.schedule is not None:
        _prefix_errors(lambda: check_keras_object("schedule", train.schedule, "train.schedule"),
                       where)
    return Recipe(
        path=path,
        schema=schema,
        datasets=datasets,
        detector=component("detector", data.detector, "data.detector"),
        split=split,
        balancer=component("balancer", data.balancer, "data.balancer"),
        augment=tuple(component("augmentation", a, f"data.augment.{i}")
                      for i, a in enumerate(data.augment)),
        backbone=component("backbone", model.backbone, "model.backbone"),
        attention=component("attention", model.attention, "model.attention"),
        heads={task: component("head", spec, f"model.heads.{task}")
               for task, spec in model.heads.items()},
        loss=component("loss", train.loss, "train.loss"),
        overrides=overrides,
        source_text=source_text,
    )


def _split_value(value: dict[str, Any], where: str) -> dict[str, Any]:
    """``data.split`` without ``type`` is the built-in ``stratified`` split; the first wave's
    ``protocol`` key gets a message saying what replaced it."""
    if "protocol" in value:
        from facelab.manager import get_registry

        known = ", ".join(get_registry().names("split"))
        raise FacelabError("data.split.protocol: replaced by data.split.type, a split component "
                           f"(protocol sound is type stratified); known splits: {known}",
                           where=where)
    return value if "type" in value else {"type": "stratified", **value}


def resolve_component(registry: Registry, kind: str, value: Any, where: str) -> ComponentSpec:
    if not isinstance(value, dict):
        raise FacelabError(f"{where}: expected a mapping {{type: <{kind} name>, ...}}, "
                           f"got {value!r}")
    if "type" not in value:
        raise FacelabError(f"{where}.type: missing; expected one of: "
                           f"{', '.join(registry.names(kind))}")
    name = value["type"]
    if not isinstance(name, str):
        raise FacelabError(f"{where}.type: expected a {kind} name, got {name!r}")
    component = registry.get(kind, name, where=f"{where}.type")
    params = component.validate({k: v for k, v in value.items() if k != "type"}, where)
    return ComponentSpec(where, component, params)


def _prefix_errors(fn: Any, where: str) -> Any:
    try:
        return fn()
    except FacelabError as exc:
        if str(exc).startswith(f"{where}: "):
            raise
        raise FacelabError(str(exc), where=where) from None


# --------------------------------------------------------------------------------------------
# Keras optimizers and schedules by name
# --------------------------------------------------------------------------------------------
#
# Validating ``train.optimizer`` and ``train.schedule`` must not import Keras: ``import keras``
# imports TensorFlow (about 10 s), and ``facelab validate``, ``show`` and every sweep
# combination validate recipes. Keras has no import-free API for its classes' signatures, so
# the check reads Keras's own source by hand: the public API file (``keras/optimizers/
# __init__.py``, or ``keras/api/optimizers/__init__.py`` in older releases) maps each public name
# to the module defining it, and that module's class gives the ``__init__`` argument names,
# all with ``ast`` and no import. Anything the reader does not expect (another layout, a name
# it cannot follow) makes it fall back to importing Keras, so nothing passes unchecked.
# Argument *values* are checked when the object is built, at training time
# (``build_keras_object``; ``check_keras_values`` does it up front).

#: kind -> (API package below keras/, its base class), e.g. every optimizer subclasses Optimizer.
_KERAS_KINDS = {"optimizer": ("optimizers", "Optimizer"),
                "schedule": ("optimizers.schedules", "LearningRateSchedule")}


class _KerasSourceError(Exception):
    """Keras's source is not laid out as the static reader expects."""


@dataclass(frozen=True)
class _Constructors:
    """Public class name -> its ``__init__`` argument names, for one kind of Keras object."""

    arguments: dict[str, tuple[str, ...]]
    #: public class name -> the arguments without a default (``self`` left out)
    required: dict[str, tuple[str, ...]]
    #: False when some public name could not be followed, so a name missing here may exist
    complete: bool


class _KerasSource:
    """Reads Keras's modules with ``ast``: what a module-level name is bound to, class bases,
    constructor arguments."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("keras")  # finds the package; does not import it
        if spec is None or not spec.submodule_search_locations:
            raise _KerasSourceError("keras is not installed")
        self.root = Path(list(spec.submodule_search_locations)[0])
        self._trees: dict[Path, ast.Module] = {}

    def file(self, module: str) -> Path | None:
        """The source file of Keras module ``module`` (``keras.src.optimizers.adam``)."""
        parts = module.split(".")
        if parts[0] != "keras":
            return None
        path = self.root.joinpath(*parts[1:])
        if len(parts) > 1 and path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        return path / "__init__.py" if (path / "__init__.py").is_file() else None

    def tree(self, module: str) -> ast.Module:
        path = self.file(module)
        if path is None:
            raise _KerasSourceError(f"no source for {module}")
        if path not in self._trees:
            self._trees[path] = ast.parse(path.read_text(encoding="utf-8"), str(path))
        return self._trees[path]

    def is_module(self, module: str) -> bool:
        return self.file(module) is not None

    def lookup(self, module: str, name: str, depth: int = 0) -> tuple[str, Any]:
        """What ``name`` is bound to at the top level of ``module``: ("class", (module,
        ClassDef)), ("module", dotted name), ("other", None) for functions and constants,
        ("outside", None) for something outside Keras, or ("unknown", None)."""
        if depth > 20:
            return "unknown", None
        if module != "keras" and not module.startswith("keras."):
            return "outside", None
        if self.is_module(f"{module}.{name}"):
            return "module", f"{module}.{name}"
        if self.file(module) is None:
            return "unknown", None
        found: tuple[str, Any] = ("unknown", None)
        for node in self.tree(module).body:  # the last top-level binding wins, as in Python
            if isinstance(node, ast.ClassDef) and node.name == name:
                found = ("class", (module, node))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                found = ("other", None)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        source = self._absolute(module, node)
                        if source is None:
                            found = ("unknown", None)
                            continue
                        found = ("import", (source, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname == name:
                        found = ("module", alias.name)
                    elif alias.asname is None and alias.name.split(".")[0] == name:
                        found = ("module", name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    found = ("unknown", None)
        if found[0] == "import":
            source, original = found[1]
            return self.lookup(source, original, depth + 1)
        return found

    def _absolute(self, module: str, node: ast.ImportFrom) -> str | None:
        """The absolute module name of ``from <module> import ...`` inside ``module``."""
        if not node.level:
            return node.module
        parts = module.split(".")
        is_package = (self.file(module) or Path()).name == "__init__.py"
        keep = len(parts) - node.level + (1 if is_package else 0)
        if keep < 1:
            return None
        return ".".join([*parts[:keep], *([node.module] if node.module else [])])

    def resolve(self, module: str, expr: ast.expr) -> tuple[str, Any]:
        """What the expression ``expr`` (a class base: ``Name`` or ``module.Name``) refers to."""
        if isinstance(expr, ast.Name):
            return self.lookup(module, expr.id)
        if isinstance(expr, ast.Attribute):
            kind, value = self.resolve(module, expr.value)
            if kind == "module":
                return self.lookup(value, expr.attr)
            return (kind, None) if kind == "outside" else ("unknown", None)
        return "unknown", None

    def subclasses(self, module: str, cls: ast.ClassDef, target: tuple[str, str],
                   depth: int = 0) -> bool:
        """Whether the class is ``target`` (module, name) or derives from it."""
        if (module, cls.name) == target:
            return True
        if depth > 20:
            raise _KerasSourceError(f"class hierarchy of {cls.name} too deep")
        for base in cls.bases:
            kind, value = self.resolve(module, base)
            if kind == "class" and self.subclasses(*value, target, depth + 1):
                return True
            if kind not in ("class", "outside"):
                raise _KerasSourceError(f"cannot follow base {ast.unparse(base)} of {cls.name}")
        return False

    def init_arguments(self, module: str, cls: ast.ClassDef, depth: int = 0,
                       ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``__init__``'s parameter names in ``inspect.signature`` order (self included), and
        those without a default (self left out)."""
        for node in cls.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                args = node.args
                positional = [a.arg for a in (*args.posonlyargs, *args.args)]
                names = [*positional, *([args.vararg.arg] if args.vararg else []),
                         *(a.arg for a in args.kwonlyargs),
                         *([args.kwarg.arg] if args.kwarg else [])]
                required = positional[1:len(positional) - len(args.defaults)]
                required += [a.arg for a, default in zip(args.kwonlyargs, args.kw_defaults)
                             if default is None]
                return tuple(names), tuple(required)
        if depth > 20:
            raise _KerasSourceError(f"class hierarchy of {cls.name} too deep")
        for base in cls.bases:  # inherited: the first base's (the MRO, for single inheritance)
            kind, value = self.resolve(module, base)
            if kind != "class":
                raise _KerasSourceError(f"cannot follow base {ast.unparse(base)} of {cls.name}")
            return self.init_arguments(*value, depth + 1)
        raise _KerasSourceError(f"no __init__ found for {cls.name}")

    def constructors(self, kind: str) -> _Constructors:
        package, base_name = _KERAS_KINDS[kind]
        api = next((m for m in (f"keras.{package}", f"keras.api.{package}")
                    if (self.file(m) or Path()).name == "__init__.py"), None)
        if api is None:
            raise _KerasSourceError(f"no API file for keras.{package}")
        kind_of_base, base = self.lookup(api, base_name)
        if kind_of_base != "class":
            raise _KerasSourceError(f"{api}.{base_name} is not a class")
        target = (base[0], base[1].name)
        arguments, required, complete = {}, {}, True
        for node in self.tree(api).body:
            if not isinstance(node, ast.ImportFrom):
                if not isinstance(node, ast.Expr):  # the docstring
                    complete = False
                continue
            for alias in node.names:
                public = alias.asname or alias.name
                if public.startswith("_"):
                    continue
                what, value = self.lookup(api, public)
                if what in ("module", "other"):
                    continue
                if what != "class":
                    complete = False
                    continue
                if (value[0], value[1].name) == target:
                    continue
                try:
                    if self.subclasses(*value, target):
                        arguments[public], required[public] = self.init_arguments(*value)
                except _KerasSourceError:
                    complete = False
        if not arguments:
            raise _KerasSourceError(f"no {kind} classes found in {api}")
        return _Constructors(arguments, required, complete)


@functools.cache
def _static_constructors(kind: str) -> _Constructors:
    """The Keras classes of ``kind`` and their arguments, read from Keras's source (no import)."""
    return _KerasSource().constructors(kind)


@functools.cache
def _imported_constructors(kind: str) -> _Constructors:
    """The same as ``_static_constructors``, by importing Keras (the fallback; ~10 s)."""
    signatures = {name: inspect.signature(cls.__init__).parameters.values()
                  for name, cls in _keras_classes(kind).items()}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return _Constructors(
        {name: tuple(p.name for p in params) for name, params in signatures.items()},
        {name: tuple(p.name for p in list(params)[1:]
                     if p.default is p.empty and p.kind not in variadic)
         for name, params in signatures.items()},
        complete=True)


def _keras_classes(kind: str) -> dict[str, type]:
    """Public name -> class of every Keras optimizer (or learning-rate schedule); imports Keras."""
    import keras

    module = keras.optimizers if kind == "optimizer" else keras.optimizers.schedules
    base = keras.optimizers.Optimizer if kind == "optimizer" else \
        keras.optimizers.schedules.LearningRateSchedule
    return {n: c for n, c in vars(module).items()
            if isinstance(c, type) and issubclass(c, base) and c is not base}


def _find(names: Iterable[str], name: str) -> str | None:
    by_key = {_normalise(n): n for n in names}
    return by_key.get(_normalise(name))


def keras_class(kind: str, name: str, where: str) -> type:
    """The Keras optimizer or learning-rate schedule class called ``name`` (any case, - or _).

    Imports Keras; validation uses :func:`check_keras_object`, which does not.
    """
    classes = _keras_classes(kind)
    found = _find(classes, name)
    if found is None:
        suggestions = sorted(_kebab(n) for n in classes)
        raise FacelabError(f"{where}.type: {did_you_mean(name, suggestions, what=kind)}")
    return classes[found]


def check_keras_object(kind: str, spec: KerasObject, where: str, supplied: Sequence[str] = (),
                       ) -> None:
    """Check ``type`` and the argument names against the Keras constructor, without importing
    Keras (see the comment above): unknown names get a suggestion, and arguments without a
    default must be given (in the recipe, or by facelab: ``supplied``)."""
    try:
        constructors = _static_constructors(kind)
    except Exception:  # noqa: BLE001 - any surprise in Keras's source: ask Keras itself
        constructors = _imported_constructors(kind)
    found = _find(constructors.arguments, spec.type)
    if found is None and not constructors.complete:
        constructors = _imported_constructors(kind)
        found = _find(constructors.arguments, spec.type)
    if found is None:
        suggestions = sorted(_kebab(n) for n in constructors.arguments)
        raise FacelabError(f"{where}.type: {did_you_mean(spec.type, suggestions, what=kind)}")
    accepted = constructors.arguments[found]
    for key in spec.model_extra or {}:
        if key not in accepted:
            names = [p for p in accepted if p not in ("self", "kwargs", "name")]
            raise FacelabError(f"{where}.{key}: {did_you_mean(key, names, what=f'{kind} argument')}")
    for key in constructors.required[found]:
        if key not in (spec.model_extra or {}) and key not in supplied:
            raise FacelabError(f"{where}.{key}: field required ({kind} {spec.type!r} has no "
                               "default for it)")


def check_keras_values(recipe: Recipe) -> None:
    """Build the recipe's schedule and optimizer once (imports Keras), so a wrong argument value
    (``learning_rate: abc``) fails before data preparation rather than at compile time."""
    train = recipe.schema.train
    where = str(recipe.path) if recipe.path else None
    extra = {}
    if train.schedule is not None:
        extra["learning_rate"] = _prefix_errors(
            lambda: build_keras_object("schedule", train.schedule, "train.schedule"), where)
    _prefix_errors(lambda: build_keras_object("optimizer", train.optimizer, "train.optimizer",
                                              **extra), where)


def build_keras_object(kind: str, spec: KerasObject, where: str, **extra: Any) -> Any:
    """The Keras object (imports Keras); a bad value is a FacelabError naming ``where``."""
    cls = keras_class(kind, spec.type, where)
    kwargs = {**(spec.model_extra or {}), **extra}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AttributeError) as exc:
        message = " ".join(str(exc).split())
        raise FacelabError(f"{where}: invalid {kind} arguments {kwargs!r}: {message}") from None


def _normalise(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).lower()


# --------------------------------------------------------------------------------------------
# YAML, extends, overrides, ${ENV}
# --------------------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FacelabError(f"{path}: recipe file not found") from None
    except IsADirectoryError:
        raise FacelabError(f"{path}: is a folder; expected a recipe .yaml file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FacelabError(f"{path}: cannot read recipe ({exc})") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FacelabError(f"{path}: invalid YAML at {line}{problem}") from None
    if data is None:
        raise FacelabError(f"{path}: the recipe is empty; expected a mapping of sections")
    if not isinstance(data, dict):
        raise FacelabError(f"{path}: a recipe must be a mapping of sections, "
                           f"got {type(data).__name__}")
    return data


def _read_with_extends(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise FacelabError(f"{chain[0]}: extends: cycle {cycle}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise FacelabError(f"{path}: extends: expected a relative path to another recipe, "
                           f"got {parent!r}")
    parent_path = (path.parent / Path(parent).expanduser())
    if not parent_path.exists():
        raise FacelabError(f"{path}: extends: {parent!r} not found (looked for {parent_path})")
    base = _read_with_extends(parent_path, (*chain, resolved))
    return deep_merge(base, data)


def deep_merge(base: Any, update: Any) -> Any:
    """``update`` over ``base``: mappings merge key by key, everything else is replaced.

    A component mapping whose ``type`` changes is replaced whole, so the old component's
    parameters do not leak into the new one: those given with the new type are kept. An
    override path (from :func:`override_tree`) updates what the recipe holds there: a mapping
    key by key, a list item by item (by index).
    """
    if isinstance(update, _OverridePath):
        if base is None:
            base = {}
        elif isinstance(base, list):
            return update.merge_into_list(base)
        elif not isinstance(base, dict):
            raise FacelabError(f"{update.where}: {update.path} is {base!r}, not a mapping")
    elif not (isinstance(base, dict) and isinstance(update, dict)):
        return _plain(update)
    if "type" in base and "type" in update and base["type"] != update["type"]:
        return _plain(update)
    merged = copy.deepcopy(base)
    for key, value in update.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else _plain(value)
    return merged


class _OverridePath(dict):
    """A mapping that ``--set`` overrides reach by a dotted path: ``a.b.c=1`` makes ``a`` and
    ``a.b`` paths. Merged over the recipe, it updates whatever is there (a mapping key by key, a
    list by index), where a mapping *value* (``a.b={c: 1}``) merges and other values replace."""

    def __init__(self, path: str, where: str):
        super().__init__()
        self.path = path  # the dotted key path, e.g. data.augment
        self.where = where  # "--set <override>" of the first override through here
        self.wheres: dict[str, str] = {}  # key -> the first override that set it

    def child_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def merge_into_list(self, base: list) -> list:
        merged = copy.deepcopy(base)
        for key, value in self.items():
            where = self.wheres.get(key, self.where)
            i = _index(base, str(key), self.child_path(key), where)
            merged[i] = deep_merge(base[i], value)
        return merged


def _plain(value: Any) -> Any:
    """A deep copy with override paths turned into plain mappings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def parse_override(override: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as a YAML scalar or flow collection)."""
    where = f"--set {override}"
    if "=" not in override:
        raise FacelabError(f"{where}: expected KEY=VALUE, e.g. train.epochs=5")
    key, _, text = override.partition("=")
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise FacelabError(f"{where}: expected a dotted key such as train.epochs, got {key!r}")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise FacelabError(f"{where}: the value is not valid YAML "
                           f"({str(exc).splitlines()[0]})") from None
    if parts[0] not in SECTIONS and parts[0] != "extends":
        raise FacelabError(f"{where}: {did_you_mean(parts[0], SECTIONS, what='section')}")
    return parts, value


def override_tree(overrides: Sequence[str]) -> dict[str, Any]:
    """All ``--set`` overrides as one nested update, later ones winning key by key.

    Merged over the recipe with :func:`deep_merge`, so a changed ``type`` replaces its component
    (``--set model.attention.type=se`` drops CBAM's parameters) while the parameters given on
    the command line are kept, in whatever order they come.
    """
    tree = _OverridePath("", "--set")
    for override in overrides:
        parts, value = parse_override(override)
        where = f"--set {override}"
        node: Any = tree
        for i, part in enumerate(parts[:-1]):
            node = _tree_child(node, part, ".".join(parts[: i + 1]), where)
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, ".".join(parts), where)] = copy.deepcopy(value)
            continue
        if isinstance(node, _OverridePath):
            node.wheres.setdefault(last, where)
        old = node.get(last)
        if isinstance(old, dict) and isinstance(value, dict):
            node[last] = _tree_merge(old, value)
        else:
            node[last] = copy.deepcopy(value)
    return tree


def _tree_child(node: dict | list, part: str, path: str, where: str) -> Any:
    """The tree node at ``part`` below ``node``, made when missing (a path below a path)."""
    if isinstance(node, list):  # a list given as a value earlier on the command line
        child = node[_index(node, part, path, where)]
        if not isinstance(child, (dict, list)):
            raise FacelabError(f"{where}: {path} is {child!r}, not a mapping")
        return child
    if isinstance(node, _OverridePath):
        node.wheres.setdefault(part, where)
    child = node.get(part)
    if child is None:
        child = node[part] = _OverridePath(path, where) if isinstance(node, _OverridePath) else {}
    elif not isinstance(child, (dict, list)):
        raise FacelabError(f"{where}: {path} is {child!r}, not a mapping")
    return child


def _tree_merge(node: dict, value: dict) -> dict:
    """A mapping value over a tree node, like ``deep_merge`` but keeping the node's paths."""
    if "type" in node and "type" in value and node["type"] != value["type"]:
        return copy.deepcopy(value)
    for key, item in value.items():
        old = node.get(key)
        node[key] = _tree_merge(old, item) if isinstance(old, dict) and isinstance(item, dict) \
            else copy.deepcopy(item)
    return node


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """The recipe with every ``--set`` override applied (see :func:`override_tree`)."""
    return deep_merge(raw, override_tree(overrides)) if overrides else raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` (value parsed as a YAML scalar or flow collection) in place."""
    merged = apply_overrides(raw, [override])
    raw.clear()
    raw.update(merged)


def _index(node: list, part: str, path: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise FacelabError(f"{where}: {path}: expected a list index below {len(node)}")
    return int(part)


def _expand(value: Any, where: str, path: tuple[str, ...]) -> Any:
    """Expand ``${ENV_VAR}`` in every string and a leading ``~/`` in path-like strings."""
    if isinstance(value, dict):
        return {k: _expand(v, where, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where, (*path, str(i))) for i, v in enumerate(value)]
    if isinstance(value, str):
        def env(match: re.Match) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise FacelabError(f"{'.'.join(path)}: environment variable {name} is not set; "
                                   f"set it or use --set {'.'.join(path)}=...", where=where)
            return os.environ[name]

        value = _ENV_PATTERN.sub(env, value)
        if value == "~" or value.startswith("~/"):
            value = os.path.expanduser(value)
    return value


def iter_component_specs(recipe: Recipe) -> Iterable[ComponentSpec]:
    yield from recipe.datasets.values()
    yield from (recipe.detector, recipe.split, recipe.balancer, *recipe.augment, recipe.backbone,
                recipe.attention, *recipe.heads.values(), recipe.loss)


__all__ = ["Recipe", "ComponentSpec", "load_recipe", "validate_recipe", "deep_merge",
           "apply_override", "apply_overrides", "override_tree", "build_keras_object",
           "check_keras_values"]
