"""Run a command that dies with its parent: ``python -m facelab.plugins.mlflow.watchdog PID --
COMMAND...``, the way ``facelab ui`` starts ``mlflow server``.

The watchdog is started in a new session (``start_new_session=True``), so it leads a process
group holding the server and every worker the server starts. It ends that whole group when
``PID`` (``facelab ui``) is gone, however it ended (Ctrl-C, SIGTERM, SIGKILL, a closed terminal):
on Linux at once, through ``prctl(PR_SET_PDEATHSIG, SIGTERM)``; everywhere within
:data:`POLL` seconds, by watching its parent pid change. SIGTERM to the group (how ``facelab
ui`` stops the server) ends it the same way: the group gets SIGTERM and, once the server has
exited (at most :data:`GRACE` seconds later), SIGKILL, so no worker outlives it. When the
server exits by itself, the watchdog exits with its code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

#: Seconds between checks that the parent is alive (where PR_SET_PDEATHSIG is not available).
POLL = 0.5
#: Seconds the server's group gets to stop after SIGTERM, before SIGKILL.
GRACE = 10.0
PR_SET_PDEATHSIG = 1


def _death_signal() -> None:
    """Linux: SIGTERM to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    parent = int(argv[0])
    command = argv[argv.index("--") + 1:]
    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM reaches us too
        try:
            os.killpg(os.getpgrp(), signal.SIGTERM)
        except OSError:
            pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _death_signal()
    if os.getppid() != parent:  # it died before the death signal was set
        return 1
    child = subprocess.Popen(command)
    while child.poll() is None:
        if not stopping and os.getppid() != parent:
            stop()
        if stopping:
            try:
                child.wait(timeout=GRACE)
                time.sleep(0.5)  # the server's workers handle their SIGTERM too
            except subprocess.TimeoutExpired:
                pass
            # nothing of the group outlives it (the watchdog included: its job is done)
            os.killpg(os.getpgrp(), signal.SIGKILL)
        time.sleep(POLL)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
