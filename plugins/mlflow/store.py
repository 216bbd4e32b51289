"""Reading the MLflow store from the terminal: list runs, compare runs, start the UI."""

from __future__ import annotations

import fnmatch
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.plugins.mlflow.tracking import quiet_mlflow, tracking_uri
from facelab.results import parse_metric_name

#: Tags shown by ``compare`` when they differ (params cover the components themselves).
COMPARED_TAGS = ("facelab.recipe", "facelab.plugins", "facelab.version", "facelab.git_commit")
#: Columns of ``facelab runs`` besides test accuracies and macro F1s.
EFFICIENCY = ("total_params", "fps")
#: The order of metric kinds in ``compare``.
_KIND_ORDER = {"final": 0, "efficiency": 2, "epoch": 3}


def store_uri(uri: str | None = None) -> str:
    """The store to read: ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``
    in the working directory, which must exist (reading must not create an empty store)."""
    resolved = tracking_uri(uri)
    path = sqlite_path(resolved)
    if path is not None and not path.exists():
        raise FacelabError(f"no MLflow store at {path}; run this where "
                           "you ran `facelab run`, or pass --tracking-uri (or set "
                           "MLFLOW_TRACKING_URI)")
    return resolved


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser().absolute()


def client(uri: str | None = None):
    """A client of the store; its first use (schema creation or migration) under the store's
    lock, so it never races a run that creates the same sqlite store."""
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    from facelab.plugins.mlflow.tracking import store_lock

    resolved = store_uri(uri)
    with store_lock(resolved):
        found = MlflowClient(resolved)
        if resolved.startswith("sqlite:///"):
            found.search_experiments(max_results=1)
    return found


def experiment_ids(mlflow_client, experiment: str | None) -> list[str]:
    if experiment is None:
        return [e.experiment_id for e in mlflow_client.search_experiments()]
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        from facelab.errors import did_you_mean

        names = [e.name for e in mlflow_client.search_experiments()]
        raise FacelabError(f"--experiment: {did_you_mean(experiment, names, what='experiment')}")
    return [found.experiment_id]


def search(mlflow_client, experiment: str | None = None, limit: int = 20,
           filter_string: str = "", sweep: str | None = None) -> list:
    """Newest runs first."""
    from mlflow.exceptions import MlflowException

    if sweep:
        clause = f"tags.`facelab.sweep_id` = '{sweep}'"
        filter_string = f"{filter_string} and {clause}" if filter_string else clause
    try:
        return list(mlflow_client.search_runs(experiment_ids(mlflow_client, experiment),
                                              filter_string=filter_string, max_results=limit,
                                              order_by=["attributes.start_time DESC"]))
    except MlflowException as exc:
        raise FacelabError(f"--filter: {exc.message.splitlines()[0]}") from None


def resolve_run(mlflow_client, run_id: str):
    """A run by id or by a unique id prefix (at least 4 characters)."""
    from mlflow.exceptions import MlflowException

    if len(run_id) == 32:
        try:
            return mlflow_client.get_run(run_id)
        except MlflowException:
            raise FacelabError(f"run {run_id}: not found in this store") from None
    if len(run_id) < 4:
        raise FacelabError(f"run {run_id!r}: give at least 4 characters of the run id")
    matches = []
    for experiment in experiment_ids(mlflow_client, None):
        token = None
        while True:
            page = mlflow_client.search_runs([experiment], max_results=1000, page_token=token)
            matches += [r for r in page if r.info.run_id.startswith(run_id)]
            token = page.token
            if not token:
                break
    if not matches:
        raise FacelabError(f"run {run_id}: no run id starts with it in this store "
                           "(see `facelab runs`)")
    if len(matches) > 1:
        raise FacelabError(f"run {run_id}: ambiguous, matches "
                           f"{', '.join(r.info.run_id[:12] for r in matches)}")
    return matches[0]


# --------------------------------------------------------------------------------------------
# facelab runs
# --------------------------------------------------------------------------------------------

def key_metrics(runs: list) -> list[str]:
    """Test accuracy and macro F1 per task, then parameters and FPS, as present in ``runs``
    (first-wave names such as ``test_race_accuracy`` too)."""
    keys = set().union(*(r.data.metrics for r in runs)) if runs else set()
    parsed = {k: parse_metric_name(k) for k in keys}
    headline = [k for k, p in parsed.items() if p and p.is_headline]
    headline.sort(key=lambda k: (parsed[k].metric != "accuracy", parsed[k].task, k))
    wanted = {name: i for i, name in enumerate(EFFICIENCY)}
    efficiency = sorted((k for k, p in parsed.items() if p and p.kind == "efficiency"
                         and p.metric in wanted), key=lambda k: wanted[parsed[k].metric])
    return headline + efficiency


def metric_label(key: str) -> str:
    """A short column header: ``test/race/accuracy`` -> ``race acc``; ``efficiency/fps`` ->
    ``FPS``."""
    parsed = parse_metric_name(key)
    if parsed is None:
        return key
    if parsed.kind == "efficiency":
        return {"total_params": "params", "fps": "FPS"}.get(parsed.metric, parsed.metric)
    short = {"accuracy": "acc", "f1_macro": "F1"}.get(parsed.metric, parsed.metric)
    return f"{parsed.task} {short}" + (f" {parsed.cls}" if parsed.cls else "")


def run_row(run, metrics: list[str]) -> dict[str, Any]:
    info = run.info
    duration = (info.end_time - info.start_time) / 1000 if info.end_time else None
    return {"run_id": info.run_id, "name": info.run_name, "status": info.status,
            "experiment_id": info.experiment_id,
            "start_time": info.start_time, "duration_s": duration,
            "recipe": run.data.tags.get("facelab.recipe"),
            "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
            "error": run.data.tags.get("facelab.error"),
            "metrics": {k: run.data.metrics[k] for k in metrics if k in run.data.metrics}}


# --------------------------------------------------------------------------------------------
# facelab compare
# --------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    runs: list
    params: list[tuple[str, list[str | None]]]   # only differing ones unless show_all
    tags: list[tuple[str, list[str | None]]]
    metrics: list[tuple[str, list[float | None]]]
    same_params: int


def metric_order(key: str) -> tuple:
    """test first, then validation, efficiency, per-epoch curves, then anything else."""
    parsed = parse_metric_name(key)
    if parsed is None:
        return 9, key
    if parsed.kind == "final":
        return (0 if parsed.split == "test" else 1), key
    return _KIND_ORDER[parsed.kind], key


def compare(runs: list, show_all: bool = False, patterns: tuple[str, ...] = ()) -> Comparison:
    if len(runs) < 2:
        raise FacelabError("compare needs at least two run ids")
    param_keys = sorted(set().union(*(r.data.params for r in runs)))
    params, same = [], 0
    for key in param_keys:
        values = [r.data.params.get(key) for r in runs]
        if len(set(values)) > 1 or show_all:
            params.append((key, values))
        if len(set(values)) == 1:
            same += 1
    tags = []
    for key in COMPARED_TAGS:
        values = [r.data.tags.get(key) for r in runs]
        if len(set(values)) > 1:
            tags.append((key, values))
    metric_keys = set().union(*(r.data.metrics for r in runs))
    if patterns:
        metric_keys = {k for k in metric_keys if any(fnmatch.fnmatch(k, p) for p in patterns)}
    else:
        metric_keys = {k for k in metric_keys if not k.startswith("system/")}
    metrics = [(k, [r.data.metrics.get(k) for r in runs])
               for k in sorted(metric_keys, key=metric_order)]
    return Comparison(runs, params, tags, metrics, same)


def compare_url(base: str, runs: list) -> str:
    """The MLflow UI's compare view for these runs."""
    import json

    ids = json.dumps([r.info.run_id for r in runs], separators=(",", ":"))
    experiments = json.dumps(sorted({r.info.experiment_id for r in runs}), separators=(",", ":"))
    return f"{base.rstrip('/')}/#/compare-runs?runs={ids}&experiments={experiments}"


# --------------------------------------------------------------------------------------------
# facelab ui
# --------------------------------------------------------------------------------------------

def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """``mlflow server`` against the same store; artifacts beside a sqlite store (mlruns/)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    path = sqlite_path(uri)
    if path is not None:
        command += ["--default-artifact-root", (path.parent / "mlruns").as_uri()]
    return command


def watched(command: list[str]) -> list[str]:
    """``command`` under the watchdog that ends its process group when this process dies."""
    return [sys.executable, "-m", "facelab.plugins.mlflow.watchdog", str(os.getpid()), "--",
            *command]


def ui_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # The server's job workers (GenAI scoring) cost seconds of start-up and a process each.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


# --------------------------------------------------------------------------------------------
# A running `facelab ui`: where it listens, so `compare` links to the port actually used
# --------------------------------------------------------------------------------------------

#: Beside a sqlite store: ``{"url": ..., "pid": ..., "store": ...}`` of its running UI.
UI_STATE = ".facelab-ui.json"
#: How long `facelab ui` waits for the server to answer.
UI_START_TIMEOUT = 180


def _ui_state_path(uri: str) -> Path | None:
    path = sqlite_path(uri)
    return None if path is None else path.parent / f"{path.name}{UI_STATE}"


def write_ui_state(uri: str, url: str, pid: int) -> Path | None:
    """Record the running UI's address (atomically); returns the file to remove on exit."""
    from facelab.files import write_json

    path = _ui_state_path(uri)
    if path is None:
        return None
    write_json(path, {"url": url, "pid": pid, "store": uri})
    return path


def running_ui(uri: str) -> str | None:
    """The address of a `facelab ui` serving this store, if one is running."""
    import json

    path = _ui_state_path(uri)
    try:
        state = json.loads(path.read_text()) if path else None
        os.kill(int(state["pid"]), 0)  # raises when the process is gone
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return state["url"] if state.get("store") == uri else None


def wait_until_serving(base: str, process, timeout: float = UI_START_TIMEOUT) -> None:
    """Return once ``base/health`` answers; a server that exits or never answers is an error."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None:
            raise FacelabError(f"the MLflow server exited with code {process.returncode} before "
                               "it answered; its messages are above")
        if time.monotonic() > deadline:
            raise FacelabError(f"the MLflow server did not answer {base}/health within "
                               f"{timeout:.0f} s")
        time.sleep(0.3)


def runs_url(base: str, mlflow_client, experiment: str | None) -> str:
    """The training-runs page of ``experiment`` (default: the newest run's experiment)."""
    if experiment is not None:
        ids = experiment_ids(mlflow_client, experiment)
    else:
        newest = search(mlflow_client, limit=1)
        ids = [newest[0].info.experiment_id] if newest else []
    return f"{base}/#/experiments/{ids[0]}/runs" if ids else f"{base}/"
