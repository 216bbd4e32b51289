"""Recipes: YAML -> ``extends`` deep-merge -> ``--set`` overrides -> validation -> a frozen recipe.

Every error is a :class:`FacelabError` naming the recipe file and the key path.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationInfo, field_validator
from facelab.errors import FacelabError, did_you_mean
from facelab.keras_objects import build_keras_object, check_keras_object
from facelab.params import Params, field
from facelab.registry import Component, Registry, validate_params

#: A recipe (or a file it extends) larger than this is refused unread.
MAX_RECIPE_BYTES = 1 << 20
#: At most this many values (mappings, lists, scalars) once every YAML alias is expanded: a
#: recipe has a few hundred; an "alias bomb" (each alias doubling the document) has billions.
MAX_YAML_NODES = 100_000
#: Mappings and lists nested deeper than this are refused (a recipe needs about six levels).
MAX_YAML_DEPTH = 100
#: Suffixes of the files ``extends`` may name.
RECIPE_SUFFIXES = (".yaml", ".yml")
#: Seeds go to ``keras.utils.set_random_seed`` (numpy's legacy seeding): 0 to 2**32 - 1.
MAX_SEED = 2**32 - 1


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-3``) as floats,
    and bounds aliases.

    PyYAML follows YAML 1.1, where ``1e-3`` is a string; YAML 1.2 and every recipe author read it
    as a number. An alias shares its node, so a small document can stand for an exponentially
    large one (an "alias bomb") or for an infinite one (an alias inside the node it names): the
    composed document is measured, counting every alias's expansion, before anything is built.
    """

    _depth = 0

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            check_expanded_size(node)
        return node

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str):
    """YAML text -> data, aliases bounded (see :class:`RecipeLoader`)."""
    try:
        return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expanded_size(root: yaml.Node) -> None:
    """Raise a YAML error when ``root`` expands to more than ``MAX_YAML_NODES`` values, or
    contains itself through an alias. Linear in the composed (unexpanded) nodes."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the current node's ancestors
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand the document to more than {MAX_YAML_NODES} "
                    "values (an alias bomb?)", node.start_mark)
            continue
        if key in sizes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise yaml.composer.ComposerError(
                    None, None, "recursive alias: an alias refers to a value that contains it",
                    child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))


# --------------------------------------------------------------------------------------------
# The recipe schema (everything but the components, which each plugin validates itself)
# --------------------------------------------------------------------------------------------

def component_field(default: Any, doc: str) -> Any:
    """A recipe key holding component mappings, validated by the components' own schemas."""
    return field(default, doc, json_schema_extra={"component": True})


class DataSection(Params):
    dataset: dict[str, Any] | None = component_field(None, "one dataset component")
    datasets: dict[str, dict[str, Any]] | None = component_field(
        None, "several sources: name -> dataset component, merged into one sample table")
    detector: dict[str, Any] = component_field(..., "face detector / cropper component")
    split: dict[str, Any] = component_field({"type": "stratified"},
                                            "split component: train/validation/test protocol")
    balancer: dict[str, Any] = component_field({"type": "none"},
                                               "class balancer component (training only)")
    balance_on: str | None = field(None, "task whose classes are balanced (default: stratify)")
    augment: list[dict[str, Any]] = component_field(
        [], "augmentation components, applied in order")
    cache_dir: str = field("~/.cache/facelab", "folder for generated data and the crop cache",
                           path=True)


class ModelSection(Params):
    backbone: dict[str, Any] = component_field(..., "backbone component")
    attention: dict[str, Any] = component_field({"type": "none"},
                                                "attention component after the backbone")
    heads: dict[str, dict[str, Any]] = component_field(..., "task name -> head component")


class KerasObject(Params):
    """``{type: <Keras name>, ...constructor arguments}``, checked against the constructor."""

    model_config = Params.model_config | {"extra": "allow"}
    type: str = field(..., "Keras class or alias, e.g. adam, sgd, exponential-decay")


class DistributeSection(Params):
    """Training on several devices of one machine (`tf.distribute.MirroredStrategy`): the model
    is copied to each device, every batch is split among them and their gradients are summed.
    `train.batch_size` stays the global batch (each device gets its share) and should be a
    multiple of the number of devices. See [scaling.md](scaling.md#several-gpus-in-one-run)."""

    type: Literal["none", "mirrored"] = field(
        "none", "none: one device, as TensorFlow picks it; mirrored: every visible GPU (or "
        "`devices`) in one process")
    devices: list[str] | None = field(
        None, "mirrored only: the devices to train on, e.g. [GPU:0, GPU:1] (default: the logical "
        "CPUs with logical_cpus, else every GPU, else the CPU)", min_length=1)
    logical_cpus: int | None = field(
        None, "mirrored only: split the CPU into this many devices (for testing a multi-device "
        "run without GPUs); TensorFlow must not have started yet", ge=2, le=64)

    @field_validator("devices", "logical_cpus")
    @classmethod
    def _mirrored_only(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("type") != "mirrored":
            raise ValueError("only used with type: mirrored; set train.distribute.type: "
                             "mirrored or remove it")
        return value


class TrainSection(Params):
    epochs: int = field(10, "training epochs", ge=1)
    batch_size: int = field(32, "training batch size (the global batch: train.distribute "
                                "splits it among the devices)", ge=1)
    optimizer: KerasObject = field(KerasObject(type="adam"), "a keras.optimizers class and args")
    schedule: KerasObject | None = field(
        None, "a keras.optimizers.schedules class and args; sets the optimizer's learning rate")
    loss: dict[str, Any] = component_field(..., "loss component")
    early_stopping: int | None = field(None, "stop after this many epochs without val improvement",
                                       ge=1)
    steps_per_epoch: int | None = field(
        None, "batches per epoch (default: one pass over the training set); other values read "
        "on through the shuffled passes", ge=1)
    checkpoints: bool = field(
        True, "after every epoch, keep checkpoints/last.* and best.* (lowest validation loss) in "
        "the output folder, so `facelab run --resume` can continue the run")
    distribute: DistributeSection = field(
        DistributeSection(), "several devices in one run: {type: none | mirrored, devices, "
        "logical_cpus}")
    augment_on: Literal["model", "pipeline"] = field(
        "model", "where data.augment runs: model (layers in front of the model, on its device, "
        "training only; never in the exported model) or pipeline (in tf.data, on the CPU)")


class EvaluateSection(Params):
    batch_size: int = field(64, "batch size for evaluation and timing", ge=1)
    figures: bool = field(True, "draw PNG figures")
    timing_batches: int = field(5, "batches timed for ms/image and FPS", ge=1)
    groups: list[str] = field([], "extra columns to report per-group accuracy over, e.g. gender")
    examples: int = field(16, "images per correct/wrong example grid", ge=0)
    explain: int = field(0, "correct and wrong test images per task to explain with Grad-CAM "
                            "overlays (explain/ in the outputs); 0: none", ge=0, le=64)
    bootstrap: int = field(1000, "bootstrap resamples for the 95% intervals of the per-group "
                           "metrics (0: no intervals)", ge=0, le=100_000)
    min_group_size: int = field(30, "groups with fewer samples are flagged too small to judge, "
                                "not ranked", ge=1, le=1_000_000)
    intersections: int = field(3, "most group columns crossed in one intersection "
                               "(1: no intersections)", ge=1, le=4)


class TrackingSection(Params):
    experiment: str = field("facelab", "experiment name in the tracking store")
    uri: str | None = field(None, "tracking store URI (default: the tracking plugin's own)",
                            path=True)
    run_name: str | None = field(None, "run name (default: the recipe name)")
    enabled: bool = field(True, "track the run (tracking plugins log nothing when false)")
    log_model: bool = field(True, "log the trained model")
    system_metrics: bool = field(True, "log CPU, memory and GPU system metrics while it runs")
    tags: dict[str, str] = field({}, "extra run tags")


class RecipeSchema(Params):
    name: str = field(..., "recipe name; also names the run's output folder (no /, \\ or ..)",
                      min_length=1)
    description: str = field("", "what this recipe is for")
    paper: str | None = field(None, "the paper this recipe reproduces")
    seed: int = field(42, "global seed, 0 to 2**32 - 1", ge=0, le=MAX_SEED)
    output_dir: str = field("runs", "folder for run outputs (figures, reports)", path=True)
    data: DataSection = field(..., "data section")
    model: ModelSection = field(..., "model section")
    train: TrainSection = field(..., "training section")
    evaluate: EvaluateSection = field(EvaluateSection(), "evaluation section")
    tracking: TrackingSection = field(TrackingSection(), "experiment tracking, read by tracking plugins")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        if any(c in value for c in "/\\") or ".." in value or value.startswith("."):
            raise ValueError("a recipe name is also a folder name: it cannot contain /, \\ or "
                             ".., nor start with a dot")
        if any(ord(c) < 32 for c in value):
            raise ValueError("the name cannot contain control characters")
        return value


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
    # ${ENV} and ~ are expanded in path fields only, by their schemas (facelab.params)
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
    recipe = Recipe(
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
    _check_declared_columns(recipe, where)
    return recipe


def _check_declared_columns(recipe: Recipe, where: str) -> None:
    """Heads and ``evaluate.groups`` against what the datasets declare, without reading data.

    Heads are checked when every dataset declares its tasks; groups when every dataset also
    declares its extra columns. A dataset that cannot know them without its data (a CSV file's
    other columns; the ``folder`` dataset's classes when its folder is missing) leaves them to
    be matched when the data is loaded.
    """
    specs = list(recipe.datasets.values())
    tasks = _declared(specs, "tasks")
    if tasks is None:
        return
    for task in recipe.tasks:
        if task not in tasks:
            raise FacelabError(f"model.heads.{task}: {did_you_mean(task, tasks, what='task')} "
                               "(tasks come from the dataset)", where=where)
    columns = _declared(specs, "columns")
    if columns is None:
        return
    known = {"source", *tasks, *columns}
    for i, group in enumerate(recipe.schema.evaluate.groups):
        if group not in known:
            raise FacelabError(f"evaluate.groups.{i}: {did_you_mean(group, known, what='column')} "
                               "(groups are the datasets' tasks and extra columns)", where=where)


def _declared(specs: list[ComponentSpec], what: str) -> list[str] | None:
    """The names every dataset declares (``tasks`` or ``columns``), or None if one cannot."""
    names: list[str] = []
    for spec in specs:
        declare = getattr(spec.component, what)
        if declare is None:
            return None
        try:
            names.extend(declare(spec.params))
        except FacelabError:  # needs the data (e.g. a folder listing): checked when loaded
            return None
    return names


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
    _check_distinct_classes(params.model_dump(mode="python"), where)
    return ComponentSpec(where, component, params)


def _check_distinct_classes(value: Any, where: str) -> None:
    """Every ``classes`` list in a component's parameters (at any depth) names distinct classes."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "classes" and isinstance(item, (list, tuple)):
                repeated = sorted({str(c) for c in item if list(item).count(c) > 1})
                if repeated:
                    raise FacelabError(f"{where}.classes: {', '.join(map(repr, repeated))} "
                                       "listed more than once; class names must be distinct")
            _check_distinct_classes(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_distinct_classes(item, f"{where}.{i}")


def _prefix_errors(fn: Any, where: str) -> Any:
    try:
        return fn()
    except FacelabError as exc:
        if str(exc).startswith(f"{where}: "):
            raise
        raise FacelabError(str(exc), where=where) from None


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


# --------------------------------------------------------------------------------------------
# YAML, extends, overrides, ${ENV}
# --------------------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    """The recipe file's text: a regular file of at most ``MAX_RECIPE_BYTES``, UTF-8. Errors
    never quote the file's content."""
    try:
        if path.is_dir():
            raise IsADirectoryError
        if not path.exists():
            raise FileNotFoundError
        if not path.is_file():
            raise FacelabError(f"{path}: not a regular file; expected a recipe .yaml file")
        with open(path, "rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise FacelabError(f"{path}: recipe file not found") from None
    except IsADirectoryError:
        raise FacelabError(f"{path}: is a folder; expected a recipe .yaml file") from None
    except OSError as exc:
        raise FacelabError(f"{path}: cannot read recipe ({exc.strerror or type(exc).__name__})"
                           ) from None
    if len(data) > MAX_RECIPE_BYTES:
        raise FacelabError(f"{path}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FacelabError(f"{path}: not UTF-8 text (byte {exc.start}); not a recipe") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FacelabError(f"{path}: invalid YAML{at}: {problem}") from None
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
    if chain and any(key not in (*SECTIONS, "extends") for key in data):
        # another file's keys are its content: say what is wrong without quoting them
        raise FacelabError(f"{path}: not a facelab recipe: its top-level keys are not all recipe "
                           f"sections ({', '.join(SECTIONS)}); validate it alone for details")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise FacelabError(f"{path}: extends: expected a relative path to another recipe, "
                           f"got {parent!r}")
    parent_path = (path.parent / Path(parent).expanduser())
    if not parent_path.name.lower().endswith(RECIPE_SUFFIXES) or \
            not parent_path.resolve().name.lower().endswith(RECIPE_SUFFIXES):
        raise FacelabError(f"{path}: extends: {parent!r} is not a .yaml or .yml file; extends "
                           "reads only recipe files")
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


def iter_component_specs(recipe: Recipe) -> Iterable[ComponentSpec]:
    yield from recipe.datasets.values()
    yield from (recipe.detector, recipe.split, recipe.balancer, *recipe.augment, recipe.backbone,
                recipe.attention, *recipe.heads.values(), recipe.loss)


__all__ = ["Recipe", "ComponentSpec", "load_recipe", "validate_recipe", "deep_merge",
           "apply_override", "apply_overrides", "override_tree", "build_keras_object",
           "check_keras_values"]
