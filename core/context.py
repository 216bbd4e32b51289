"""What a component factory may use from the run: cache folder, seed, progress."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class ProgressReporter(Protocol):
    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        """Yield ``items`` while showing progress."""

    def log(self, message: str) -> None:
        """Print one line of status."""

    def phase(self, description: str):
        """A context manager: show that ``description`` is under way until it ends."""


class QuietProgress:
    """A reporter that shows nothing (library use and tests)."""

    def track(self, items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
        yield from items

    def log(self, message: str) -> None:
        pass

    @contextmanager
    def phase(self, description: str) -> Iterator[None]:
        yield


@dataclass
class BuildContext:
    """Shared by the factories of one run."""

    cache_dir: Path
    seed: int = 0
    progress: Any = field(default_factory=QuietProgress)

    def resolve_path(self, path: str | Path) -> Path:
        """A recipe path: ``~`` expanded, relative paths taken from the working directory."""
        return Path(path).expanduser().absolute()
