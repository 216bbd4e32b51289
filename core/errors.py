"""The one user-facing error type: a one-line message, exit code 2, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FacelabError(Exception):
    """An error caused by user input (a recipe, a path, a name). The CLI prints it on one line."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class RunTerminated(BaseException):
    """Raised in the main thread when the process gets SIGTERM during a run (like Ctrl-C)."""


class RunStopped(Exception):
    """Raised by an observer that stops a run on purpose (a sweep's pruner, from a training
    callback): the run ends KILLED, as after Ctrl-C, not FAILED; the message says why."""


def did_you_mean(name: str, known: Iterable[str], *, what: str) -> str:
    """``unknown backbone 'efficentnet'; did you mean 'efficientnet'? (known: ...)``"""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    message = f"unknown {what} {name!r}"
    if close:
        message += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    message += f" (known: {', '.join(known) if known else 'none registered'})"
    return message
