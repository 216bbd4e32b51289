"""Parameter schemas for components: pydantic models that reject unknown keys.

Path fields (``field(..., path=True)``) are the only values in which ``${ENV}`` and a leading
``~`` are expanded; ``${...}`` in any other field is an error naming the key. Recipes are data a
user may receive from someone else: expanding variables everywhere would copy the environment
(tokens, passwords) into run names, tags and tracking params.
"""

from __future__ import annotations

import os
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

#: ``${NAME}``: the only form of environment variable a recipe expands (in path fields).
ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Error types raised by the expansion; ``registry.render_validation_error`` words them.
ENV_UNSET, ENV_NOT_PATH = "facelab_env_unset", "facelab_env_not_path"


class Params(BaseModel):
    """Base class of every component's parameter schema.

    Unknown keys are rejected, values are validated strictly enough that a string is never
    silently accepted where a number is expected, and the schema is frozen once built.
    Every field should carry a one-line ``description``: it becomes the reference docs.
    Fields declared with ``field(..., path=True)`` expand ``${ENV}`` and ``~``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _facelab_expand_paths(cls, values: Any) -> Any:
        """Expand ``${ENV}`` and ``~`` in path fields; ``${...}`` elsewhere is an error."""
        if not isinstance(values, dict):
            return values
        out = dict(values)
        for key, value in values.items():
            info = cls.model_fields.get(key) if isinstance(key, str) else None
            if info is not None and is_path_field(info):
                if isinstance(value, str):
                    out[key] = expand_path(value, str(key))
            elif info is None or not (_holds_params(info.annotation)
                                      or _extra(info).get("component")):
                _reject_env(value, str(key))  # components and nested schemas check themselves
        return out


def field(default: Any = ..., doc: str = "", *, path: bool = False, **kwargs: Any) -> Any:
    """A schema field with its one-line doc: ``size: int = field(64, "output side in pixels")``.

    ``path=True`` marks a file or folder (``root``, ``cache_dir``, a weights file): only such
    fields expand ``${ENV}`` and a leading ``~`` when a recipe is loaded.
    """
    if path:
        extra = dict(kwargs.pop("json_schema_extra", None) or {})
        kwargs["json_schema_extra"] = {**extra, "path": True}
    return Field(default, description=doc, **kwargs)


def is_path_field(info: Any) -> bool:
    """Whether a pydantic ``FieldInfo`` was declared with ``field(..., path=True)``."""
    return _extra(info).get("path") is True


def _extra(info: Any) -> dict:
    extra = getattr(info, "json_schema_extra", None)
    return extra if isinstance(extra, dict) else {}


def expand_path(value: str, key: str) -> str:
    """``${NAME}`` -> the environment variable (unset: an error naming ``key``), then ``~``."""
    def env(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise PydanticCustomError(ENV_UNSET, "environment variable {name} is not set",
                                      {"name": name, "key": key})
        return os.environ[name]

    value = ENV_PATTERN.sub(env, value)
    if value == "~" or value.startswith("~/"):
        value = os.path.expanduser(value)
    return value


def _reject_env(value: Any, key: str) -> None:
    if isinstance(value, str):
        match = ENV_PATTERN.search(value)
        if match:
            raise PydanticCustomError(
                ENV_NOT_PATH, "${{{name}}}: environment variables expand only in path fields",
                {"name": match.group(1), "key": key})
    elif isinstance(value, dict):
        for k, v in value.items():
            _reject_env(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _reject_env(v, f"{key}.{i}")


def _holds_params(annotation: Any) -> bool:
    """Whether values of ``annotation`` may be nested ``Params`` models (which check themselves)."""
    if isinstance(annotation, type) and issubclass(annotation, Params):
        return True
    return any(_holds_params(a) for a in typing.get_args(annotation)
               if a is not Ellipsis and not isinstance(a, (str, int, types.NoneType)))


class NoParams(Params):
    """A component without parameters."""
