"""A real `mlflow server` for tests: started on a free loopback port, stopped as a process
group (the server starts workers of its own)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A server on ``folder/server.db`` (the same store each time) with artifacts in
    ``folder/artifacts``; returns the process and its URL once it answers."""
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = open(folder / "server.log", "a")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--default-artifact-root", (folder / "artifacts").as_uri(),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_server(process)
                raise RuntimeError(f"mlflow server did not start:\n"
                                   f"{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)


def stop_server(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    """Stop the server's whole process group (``sig``, then SIGKILL after 20 s)."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
