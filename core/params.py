"""Parameter schemas for components: pydantic models that reject unknown keys."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    """Base class of every component's parameter schema.

    Unknown keys are rejected, values are validated strictly enough that a string is never
    silently accepted where a number is expected, and the schema is frozen once built.
    Every field should carry a one-line ``description``: it becomes the reference docs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def field(default: Any = ..., doc: str = "", **kwargs: Any) -> Any:
    """A schema field with its one-line doc: ``size: int = field(64, "output side in pixels")``."""
    return Field(default, description=doc, **kwargs)


class NoParams(Params):
    """A component without parameters."""
