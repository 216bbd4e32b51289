"""Ctrl-C and SIGTERM during a run: the first one stops it, the rest wait for the cleanup.

:func:`stop_on_signals` makes SIGINT raise ``KeyboardInterrupt`` and SIGTERM raise
:class:`facelab.errors.RunTerminated` (as Ctrl-C does), once: from the first signal on, further
SIGINT and SIGTERM are only recorded until the outermost such block ends, so a user pressing
Ctrl-C several times or a scheduler escalating cannot interrupt the cleanup that records the run
as KILLED. :func:`deferred` holds both signals back around a piece of cleanup (a failure's
reporting, the final status) and delivers what arrived afterwards.

Signal handlers run in the main thread only; elsewhere both are no-ops.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from facelab.errors import RunTerminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    depth = 0  # stop_on_signals blocks entered
    stopping: int | None = None  # the signal that is stopping the run, once one arrived
    ignored: list[int] = []  # signals that arrived while stopping


_state = _State()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _exception(signum: int) -> BaseException:
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return RunTerminated(f"terminated by signal {signum}")


def _stop(signum, frame):
    if _state.stopping is not None:  # a stop is under way: its cleanup must not be cut short
        _state.ignored.append(signum)
        return
    _state.stopping = signum
    raise _exception(signum)


def _quiet_unraisable(previous):
    """Python prints, then drops, an exception raised where it cannot propagate (a finaliser,
    a weakref callback); the stop it carried is kept in ``_state`` and raised again at the next
    safe point (:func:`raise_if_stopping`), so printing its traceback would only be noise."""
    def hook(unraisable):
        if _state.stopping is not None and isinstance(
                unraisable.exc_value, (KeyboardInterrupt, RunTerminated)):
            return
        previous(unraisable)
    return hook


def stopping() -> int | None:
    """The signal that is stopping the run, if one arrived."""
    return _state.stopping


def raise_if_stopping() -> None:
    """Raise the stop again if a signal arrived but its exception was swallowed: a handler
    that runs inside a finaliser or a weakref callback has its exception printed and dropped by
    Python, and the run would go on. The runner and the tracking plugin call this at safe
    points (after each phase, each epoch, before a run is marked FINISHED)."""
    if _state.stopping is not None:
        raise _exception(_state.stopping)


@contextmanager
def stop_on_signals(*, keep_after_stop: bool = False) -> Iterator[None]:
    """While inside, the first SIGINT raises ``KeyboardInterrupt`` and the first SIGTERM
    :class:`RunTerminated`; later ones are recorded only. Blocks nest; the outermost restores the
    handlers it found, unless ``keep_after_stop`` (the command line, about to exit) and a signal
    stopped the run: then both signals are ignored (``SIG_IGN``) until the process ends."""
    if not _in_main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    outermost = _state.depth == 0
    _state.depth += 1
    for s in SIGNALS:
        signal.signal(s, _stop)
    unraisable = sys.unraisablehook
    if outermost:
        sys.unraisablehook = _quiet_unraisable(unraisable)
    try:
        yield
    finally:
        if outermost:
            sys.unraisablehook = unraisable
        _state.depth -= 1
        if outermost and keep_after_stop and _state.stopping is not None:
            # the process is about to exit: ignored at the OS level, which Python's shutdown
            # keeps (it resets Python-level handlers to the default, which would kill it)
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)
        else:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if outermost:
                _state.stopping, _state.ignored = None, []


@contextmanager
def deferred() -> Iterator[list[int]]:
    """While inside, SIGINT and SIGTERM are recorded, not acted on (the list yielded); after,
    the handlers are restored and the recorded signals delivered to them once each (a stop
    already under way ignores them)."""
    if not _in_main_thread():
        yield []
        return
    arrived: list[int] = []
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, lambda signum, frame: arrived.append(signum))
    try:
        yield arrived
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in dict.fromkeys(arrived):
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
