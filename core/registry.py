"""Registries: for each component kind, name -> (factory, parameter schema, doc, origin)."""

from __future__ import annotations

import fnmatch
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from facelab.errors import FacelabError, did_you_mean
from facelab.params import ENV_NOT_PATH, ENV_UNSET, Params

#: kind -> registration hook name, in pipeline order.
KINDS: dict[str, str] = {
    "dataset": "register_datasets",
    "detector": "register_detectors",
    "split": "register_splits",
    "balancer": "register_balancers",
    "augmentation": "register_augmentations",
    "backbone": "register_backbones",
    "attention": "register_attentions",
    "head": "register_heads",
    "loss": "register_losses",
}


@dataclass(frozen=True)
class Origin:
    """Where a component comes from: the plugin module, its distribution and version."""

    plugin: str
    package: str
    version: str
    builtin: bool

    def __str__(self) -> str:
        return f"{self.plugin} ({self.package} {self.version})"


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[Params]
    doc: str
    origin: Origin
    #: datasets only: ``tasks(params) -> {name: Task}`` without loading any data (for summaries)
    tasks: Callable[..., Any] | None = None
    #: datasets only: ``columns(params) -> [name, ...]``, the extra columns of the sample table
    #: (``age_group``, ...), so ``validate`` can check ``evaluate.groups``; None: not known
    columns: Callable[..., Any] | None = None
    #: datasets only: ``licence(params)`` and ``citation(params)`` -> text or None, what the
    #: data's terms of use are and how to cite it (model cards show them); None: not declared
    licence: Callable[..., str | None] | None = None
    citation: Callable[..., str | None] | None = None

    def terms(self, params: Params) -> dict[str, str | None]:
        """The declared ``licence`` and ``citation`` for ``params`` (None: not declared)."""
        return {"licence": self.licence(params) if self.licence else None,
                "citation": self.citation(params) if self.citation else None}

    @property
    def summary(self) -> str:
        """The doc's first line."""
        return self.doc.strip().splitlines()[0].strip() if self.doc.strip() else ""

    def validate(self, values: dict[str, Any], where: str) -> Params:
        """Validate recipe values (without ``type``) against the schema; errors name the key path."""
        return validate_params(self.params, values, where)


def validate_params(schema: type[Params], values: Any, where: str) -> Params:
    """Validate ``values`` against ``schema``; a failure is a one-line :class:`FacelabError`."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise FacelabError(render_validation_error(exc, schema, where)) from None


def render_validation_error(exc: ValidationError, schema: type[Params], where: str) -> str:
    """The first pydantic error as ``path.to.key: what was wrong; what is expected``."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if error["type"] in (ENV_UNSET, ENV_NOT_PATH):  # raised for a key of the model at ``loc``
        loc.append(error["ctx"]["key"])
    path = ".".join([where, *loc]) if where else ".".join(loc)
    if error["type"] == ENV_UNSET:
        return (f"{path}: environment variable {error['ctx']['name']} is not set; set it or use "
                f"--set {path}=...")
    if error["type"] == ENV_NOT_PATH:
        return (f"{path}: environment variables expand only in path fields (got "
                f"${{{error['ctx']['name']}}}); write the value itself")
    if error["type"] == "extra_forbidden":
        known = _known_keys(schema, error["loc"][:-1])
        if not known:
            return f"{path}: unknown key {loc[-1]!r}; this component takes no parameters"
        return f"{path}: {did_you_mean(loc[-1], known, what='key')}"
    got = error.get("input")
    got_text = "" if isinstance(got, (dict, list)) or got is None and error["type"] == "missing" \
        else f" (got {got!r})"
    message = error["msg"].removeprefix("Value error, ")  # a validator's own words, as written
    return f"{path}: {message[:1].lower()}{message[1:]}{got_text}"


def _known_keys(schema: type[Params], loc: tuple) -> list[str]:
    """Field names of the (possibly nested) model at ``loc``, through fields, mapping values
    (``tasks.race``) and list items (``tables.0``)."""
    model: Any = schema
    for part in loc:
        model = _nested_model(model)
        fields = getattr(model, "model_fields", None)
        if fields is not None:
            if part not in fields:
                return []
            model = fields[part].annotation
        elif typing.get_origin(model) in (dict, list):
            model = typing.get_args(model)[-1]  # the value type; ``part`` is a key or an index
        else:
            return []
    return list(getattr(_nested_model(model), "model_fields", {}))


def _nested_model(annotation: Any) -> Any:
    """``X | None`` -> ``X``: the model, mapping or list member of an optional annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _per_params(value: Any, convert: Callable[[Any], Any] = str) -> Callable[..., Any] | None:
    """A fixed value (``convert``-ed: a text, a tuple of names) as ``f(params) -> value``; a
    callable or None as it is."""
    if value is None or callable(value):
        return value
    return lambda params, fixed=convert(value): fixed


class Registry:
    """All registered components, by kind and name."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, name: str, factory: Callable[..., Any], params: type[Params],
            doc: str | None, origin: Origin, tasks: Callable[..., Any] | None = None,
            columns: Callable[..., Any] | Iterable[str] | None = None,
            licence: Callable[..., str | None] | str | None = None,
            citation: Callable[..., str | None] | str | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise FacelabError(f"plugin {origin.plugin}: a {kind} name must be a non-empty string")
        if not (isinstance(params, type) and issubclass(params, Params)):
            raise FacelabError(
                f"plugin {origin.plugin}: {kind} {name!r} must declare its parameters as a "
                "facelab.Params subclass")
        existing = self._components[kind].get(name)
        if existing is not None:
            raise FacelabError(
                f"duplicate {kind} {name!r}: registered by {existing.origin} and by {origin}")
        text = doc if doc is not None else inspect.getdoc(factory) or ""
        self._components[kind][name] = Component(kind, name, factory, params, text, origin, tasks,
                                                 _per_params(columns, tuple),
                                                 _per_params(licence), _per_params(citation))

    def get(self, kind: str, name: str, where: str | None = None) -> Component:
        if kind not in self._components:
            raise FacelabError(did_you_mean(kind, KINDS, what="component kind"), where=where)
        try:
            return self._components[kind][name]
        except KeyError:
            raise FacelabError(did_you_mean(str(name), self._components[kind], what=kind),
                               where=where) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            yield from (self._components[kind][n] for n in sorted(self._components[kind]))

    def find(self, kind: str | None = None, pattern: str | None = None,
             include_builtin: bool = True) -> list[Component]:
        """Components of ``kind`` whose name matches the shell-style ``pattern``."""
        return [c for c in self
                if (kind is None or c.kind == kind)
                and (pattern is None or fnmatch.fnmatchcase(c.name, pattern))
                and (include_builtin or not c.origin.builtin)]
