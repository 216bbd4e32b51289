"""Running a sweep (:mod:`facelab.plugins.mlflow.sweep`) as an Optuna study that any number of
worker processes, on any number of machines, share through one storage.

Every worker runs the same loop (:func:`run_study`):

1. **Open the study.** The first worker creates it (the storage's unique study name decides
   which one), starts the MLflow parent run and enqueues every trial the study will hold as a
   WAITING trial: each grid point once with its values fixed, or ``trials`` empty slots whose
   values the sampler picks when a worker takes one (so TPE learns from every trial finished
   by then). The others wait until that is done, check it is the same sweep (its digest) and
   join the same parent run.
2. **Take a WAITING trial** (an atomic WAITING -> RUNNING update: one worker wins), run it as a
   child run while a thread records its heartbeat, and tell Optuna its objective, PRUNED or
   FAIL.
3. **None waiting**: fail the trials whose heartbeat stopped (a dead worker's); Optuna's
   ``RetryHeartbeatStaleTrialCallback`` enqueues each again with its values. Wait while other
   workers still run trials.
4. **None waiting or running**: the study is complete. Log the best trial, every trial and the
   comparison of the children to the parent run, and end it (any worker that gets here).

Why not ``study.optimize`` with Optuna's ``GridSampler``: ``ask()`` creates a fresh trial when
the queue is empty, and GridSampler then re-runs a point another worker is still running (its
docstring says so); and its ``study.stop()`` raises outside ``optimize``. Taking only enqueued
trials runs every point exactly once, with any number of workers, and keeps the trial budget of
random and TPE sweeps exact. Optuna beats a trial's heartbeat only inside ``optimize``, so this
loop beats it itself (:func:`heartbeat`).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.plugins.mlflow.sweep import Sweep, checked_points, pruning_metric, \
    validate

INSTALL = "pip install 'facelab[sweep]'"
#: Study user attributes: the sweep's digest, the MLflow parent run, set-up done.
DIGEST, PARENT, READY = "facelab.sweep_digest", "facelab.mlflow_parent", "facelab.ready"
#: Study user attribute: the first worker's heartbeat [interval, grace] in seconds.
HEARTBEAT = "facelab.heartbeat"
#: Trial user attributes: the slot (grid point number), the run name and MLflow run, the error.
SLOT, RUN_NAME, RUN_ID, ERROR = ("facelab.slot", "facelab.run_name", "facelab.mlflow_run",
                                 "facelab.error")
#: MLflow tags of a trial's run.
STUDY_TAG, TRIAL_TAG, STATE_TAG = ("facelab.optuna.study", "facelab.optuna.trial",
                                   "facelab.optuna.state")
#: Seconds a joining worker waits for the first worker to set the study up.
SETUP_WAIT = 120.0
#: Seconds between looks at the study while other workers run the last trials.
POLL = 5.0


def require_optuna():
    """Optuna, quiet (its info lines and experimental-feature warnings), or a one-line error."""
    try:
        import optuna
    except ImportError:
        raise FacelabError(f"facelab sweep needs Optuna, which is not installed: {INSTALL}"
                           ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

@dataclass
class TrialRow:
    """One trial of the study, as the terminal and ``sweep/study.json`` show it."""

    number: int
    slot: int | None
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    params: dict[str, Any]
    value: float | None = None
    name: str | None = None
    run_id: str | None = None
    error: str | None = None
    retried_as: int | None = None  # a failed trial enqueued again as this trial


@dataclass
class StudyResult:
    study: str
    storage: str
    sweep_id: str
    parent_run_id: str | None
    trials: list[TrialRow] = field(default_factory=list)
    complete: bool = False  # nothing waiting or running when this worker left
    ran_here: list[int] = field(default_factory=list)  # trial numbers this worker ran

    @property
    def failed(self) -> list[TrialRow]:
        """Failed trials that were not retried: points the study lost."""
        return [t for t in self.trials if t.state == "FAIL" and t.retried_as is None]

    @property
    def best(self) -> TrialRow | None:
        done = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        return done[0] if done else None  # rows are sorted best first


class SweepFailed(Exception):
    """Some trials failed and were not retried: the parent run ends FAILED, the CLI exits 1."""

    def __init__(self, result: StudyResult):
        self.result = result
        names = ", ".join(t.name or f"trial {t.number}" for t in result.failed)
        super().__init__(f"{len(result.failed)} of {len(result.trials)} trials failed: {names}")


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------

def default_storage(mlflow_uri: str | None) -> str:
    """``optuna.db`` beside a sqlite MLflow store, else in the working directory."""
    from facelab.plugins.mlflow import tracking

    resolved = tracking.tracking_uri(mlflow_uri)
    prefix = "sqlite:///"
    folder = Path(resolved[len(prefix):]).parent if resolved.startswith(prefix) else Path.cwd()
    return f"{prefix}{(folder / 'optuna.db').absolute()}"


def storage_url(sweep: Sweep, mlflow_uri: str | None) -> str:
    """The sweep's storage (relative sqlite paths made absolute, as for the tracking store),
    else :func:`default_storage`."""
    from facelab.plugins.mlflow import tracking

    return tracking.tracking_uri(sweep.storage) if sweep.storage else default_storage(mlflow_uri)


def shown_url(url: str) -> str:
    """The URL without its password, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def open_storage(url: str, sweep: Sweep, on_stale: Callable[[Any], None] | None = None):
    """Optuna's RDB storage with heartbeats: a running trial silent for ``heartbeat.grace``
    seconds is failed and enqueued again (``RetryHeartbeatStaleTrialCallback``), then
    ``on_stale(frozen_trial)`` is told."""
    optuna = require_optuna()
    from facelab.plugins.mlflow import pending, tracking

    where = f"--storage {shown_url(url)}"
    if url.startswith("journal:") or url.endswith(".log"):
        raise FacelabError(f"{where}: journal storages have no heartbeats, so a dead worker's "
                           "trial would never be retried; use sqlite:///optuna.db or "
                           "postgresql+psycopg2://user:password@host/database")
    if "://" not in url:
        raise FacelabError(f"{where}: not a database URL; expected e.g. sqlite:///optuna.db "
                           "or postgresql+psycopg2://user:password@host/database")
    sqlite = url.startswith("sqlite:///")
    if sqlite and not Path(url[len("sqlite:///"):]).parent.is_dir():
        raise FacelabError(f"{where}: folder {Path(url[len('sqlite:///'):]).parent} does not "
                           "exist; create it or pick another --storage")
    beat = sweep.heartbeat
    retry = _RetryStale(beat.max_retry, on_stale)
    try:
        # the schema is created on first use: one process at a time (as for MLflow's store)
        with tracking.store_lock(url):
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else
                {"pool_pre_ping": True}, heartbeat_interval=beat.interval,
                grace_period=beat.grace, heartbeat_stale_trial_callback=retry)
    except Exception as exc:
        raise FacelabError(f"{where}: cannot open the Optuna storage "
                           f"({pending.short_error(exc)})") from None
    if sqlite:
        _serialise_sqlite_writes(storage.engine)
    return storage


def _serialise_sqlite_writes(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins (``BEGIN IMMEDIATE``), so
    concurrent workers wait for each other (the connection's timeout) instead of failing: a
    transaction that reads and then writes, as Optuna's do, otherwise gets "database is locked"
    at once when another holds the lock (SQLite's deadlock rule). SQLAlchemy's documented
    recipe for pysqlite; Optuna leaves this to the user."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners are dropped


class _RetryStale:
    """Optuna's retry of a heartbeat-stale trial (a WAITING copy with its values and
    attributes), then ``on_stale`` (the sweep ends the lost trial's MLflow run KILLED)."""

    def __init__(self, max_retry: int, on_stale: Callable[[Any], None] | None):
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study, trial) -> None:
        self.retry(study, trial)
        if self.on_stale is not None:
            self.on_stale(trial)


@contextmanager
def heartbeat(storage, trial_id: int, interval: float) -> Iterator[None]:
    """Record the trial's heartbeat now and every ``interval`` seconds while inside (a thread).
    A failed beat is skipped: the store may be back at the next one."""
    stop = threading.Event()

    def beat():
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"optuna-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# --------------------------------------------------------------------------------------------
# Samplers and pruners
# --------------------------------------------------------------------------------------------

def make_sampler(sweep: Sweep, number: int):
    """The sampler for trial ``number``, seeded ``seed + number``: reproducible with one worker,
    and no two workers draw the same sequence. A grid's trials hold fixed values (no sampling)."""
    optuna = require_optuna()
    seed = sweep.seed + number
    if sweep.sampler == "tpe":
        # constant_liar: running trials count as bad, so parallel workers spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                          n_startup_trials=min(10, max(1, (sweep.trials or 2)
                                                                       // 2)))
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(sweep: Sweep):
    optuna = require_optuna()
    pruner = sweep.pruner
    if pruner.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials,
                                           n_warmup_steps=pruner.warmup_epochs)
    if pruner.type == "threshold":
        return optuna.pruners.ThresholdPruner(lower=pruner.lower, upper=pruner.upper,
                                              n_warmup_steps=pruner.warmup_epochs)
    return optuna.pruners.NopPruner()


# --------------------------------------------------------------------------------------------
# The MLflow parent run
# --------------------------------------------------------------------------------------------

class Parent:
    """The study's parent MLflow run in this worker. If the store fails, the parent goes offline
    (one line on stderr) and the sweep goes on: each child keeps what it could not log for
    ``facelab sync``; the parent's summary and comparison are lost."""

    def __init__(self, run_id: str):
        self.run_id, self.offline = run_id, False

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.offline:
            return None
        try:
            return fn(*args)
        except FacelabError:
            raise
        except Exception as exc:  # a tracking failure (interruptions are not Exceptions)
            from rich.console import Console
            from rich.text import Text

            from facelab.plugins.mlflow import pending, tracking

            self.offline = True
            tracking.detach_active_run(self.run_id)
            Console(stderr=True, soft_wrap=True).print(Text(
                f"warning: MLflow tracking offline for the sweep's parent run {self.run_id} "
                f"({pending.short_error(exc)}); the sweep goes on, its summary and comparison "
                "are not logged; each child keeps its own (see `facelab sync`)",
                style="yellow"), highlight=False)
            return None

    def leave(self) -> None:
        """This worker stops, others go on: forget the run here without ending it."""
        from facelab.plugins.mlflow import tracking

        if not self.offline:
            tracking.detach_active_run(self.run_id)


def start_parent(sweep: Sweep, recipes: list, study_name: str, storage: str,
                 known: str | None) -> str:
    """Join the study's parent run ``known`` (the first worker's), or start one: tagged with
    the study, params describing the sweep. A worker whose MLflow store does not hold ``known``
    (another store) starts its own."""
    import mlflow

    from facelab.plugins.mlflow import tracking
    from facelab.run import git_tags

    recipe = recipes[0]
    settings = recipe.schema.tracking
    if known is not None:
        tracking.quiet_mlflow()
        tracking.use_experiment(settings.uri, settings.experiment)
        try:
            mlflow.MlflowClient().get_run(known)
        except Exception:
            known = None
        else:
            mlflow.start_run(run_id=known)
            return known
    digest = sweep.digest()
    title = sweep.name if sweep.source else "+".join(dict.fromkeys(r.name for r in recipes))
    started = tracking.start(f"{title} sweep", {
        "facelab.sweep_id": digest, "facelab.sweep_role": "parent", STUDY_TAG: study_name,
        "facelab.optuna.storage": shown_url(storage), "facelab.recipe": recipe.name,
        "facelab.version": _version(), **git_tags(sweep.recipes[0])},
        None, settings.uri, settings.experiment, False)
    tracking.log_params({
        "sweep.recipes": ", ".join(str(p) for p in sweep.recipes),
        **{f"sweep.space.{k}": _describe(d) for k, d in sweep.space.items()},
        **{f"sweep.grid.{k}": ",".join(d.grid_values(k)) for k, d in sweep.space.items()
           if d.choices is not None},
        "sweep.set": " ".join(sweep.overrides), "sweep.sampler": sweep.sampler,
        "sweep.seed": sweep.seed, "sweep.trials": sweep.size(),
        "sweep.objective": f"{sweep.objective.direction} "
                           f"{sweep.objective.metric or 'first task test accuracy'}",
        "sweep.pruner": sweep.pruner.type, "sweep.study": study_name,
        "sweep.file": str(sweep.source or "")})
    return started.info.run_id


def _describe(dimension) -> str:
    if dimension.choices is not None:
        return "choices " + ",".join(dimension.grid_values("space"))
    text = f"{dimension.low}..{dimension.high}"
    return text + (" log" if dimension.log else "") + (
        f" step {dimension.step}" if dimension.step is not None else "")


def _version() -> str:
    from facelab import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# Opening the study
# --------------------------------------------------------------------------------------------

def open_study(sweep: Sweep, storage, url: str, join_parent: Callable[[str | None], str]):
    """Create the study (and its parent run and queue) or join it; returns (study, parent id)."""
    optuna = require_optuna()
    name = sweep.study_name()
    try:
        study = optuna.create_study(storage=storage, study_name=name,
                                    direction=sweep.objective.direction)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        attrs = _wait_until_set_up(study, sweep, url)
        return study, join_parent(attrs.get(PARENT))
    study.set_user_attr(DIGEST, sweep.digest())
    study.set_user_attr(HEARTBEAT, [sweep.heartbeat.interval, sweep.heartbeat.grace])
    parent_id = join_parent(None)
    study.set_user_attr(PARENT, parent_id)
    if sweep.sampler == "grid":
        for slot, point in enumerate(sweep.grid()):
            study.enqueue_trial(point, user_attrs={SLOT: slot})
    else:
        for slot in range(sweep.trials):
            study.enqueue_trial({}, user_attrs={SLOT: slot})
    study.set_user_attr(READY, True)
    return study, parent_id


def _wait_until_set_up(study, sweep: Sweep, url: str) -> dict[str, Any]:
    from facelab.signals import raise_if_stopping

    deadline = time.monotonic() + SETUP_WAIT
    where = f"study {study.study_name} in {shown_url(url)}"
    while True:
        attrs = study.user_attrs
        digest = attrs.get(DIGEST)
        if digest is not None and digest != sweep.digest():
            raise FacelabError(f"{where} holds another sweep (digest {digest}, this one "
                               f"{sweep.digest()}): the same name with a different recipe, "
                               "space, sampler, budget, objective or pruner; pick another "
                               "--study")
        if attrs.get(READY):
            _check_heartbeat(sweep, attrs.get(HEARTBEAT), where)
            return attrs
        if time.monotonic() > deadline:
            raise FacelabError(f"{where} was not set up within {SETUP_WAIT:.0f} s (not made "
                               "by facelab sweep, or its first worker stopped while enqueueing "
                               "its trials); pick another --study")
        raise_if_stopping()
        time.sleep(0.5)


def _check_heartbeat(sweep: Sweep, first: list[int] | None, where: str) -> None:
    """Each worker judges the others' trials by its own grace: every grace must exceed every
    heartbeat interval, or live trials would be failed and run twice."""
    if not first:
        return
    interval, grace = first
    mine = sweep.heartbeat
    if mine.interval >= grace or interval >= mine.grace:
        raise FacelabError(f"{where}: its first worker beats every {interval} s with a grace of "
                           f"{grace} s; this one every {mine.interval} s with {mine.grace} s: "
                           "each grace must exceed every interval, or live trials would be run "
                           "twice; give --heartbeat and --grace to match")


# --------------------------------------------------------------------------------------------
# The worker
# --------------------------------------------------------------------------------------------

def run_study(sweep: Sweep, *, run: Callable[..., Any] | None = None,
              callbacks: Callable[[Any], list] | None = None,
              on_start: Callable[[int, int, str], None] | None = None,
              load: Callable[..., Any] | None = None,
              recipes: list | None = None) -> StudyResult:
    """Validate the sweep, open (or join) its study, run trials until none is left, and, when
    the study is complete, log its summary to the parent run and end it.

    ``run(recipe, name=, tags=, callbacks=)`` runs one trial (default:
    :func:`facelab.runner.run_recipe`) and returns its :class:`facelab.results.RunResult`;
    ``callbacks(recipe)`` gives extra Keras callbacks (progress bars); ``on_start(number, size,
    name)`` is told before each trial; ``recipes`` are the checked points' recipes when the caller
    validated them already (:func:`facelab.plugins.mlflow.sweep.validate`). A failing trial is
    recorded (Optuna FAIL, MLflow FAILED) and the worker goes on; Ctrl-C and SIGTERM stop the
    worker: its trial is enqueued again for another worker. Raises :class:`SweepFailed` at the end
    if trials were lost.
    """
    from facelab.errors import RunTerminated
    from facelab.plugins.mlflow import tracking
    from facelab.signals import stop_on_signals

    require_optuna()
    recipes = recipes or validate(sweep, checked_points(sweep), load)
    first = recipes[0]
    tracking.quiet_mlflow()
    tracking.check_store(first.schema.tracking.uri)  # one line naming the store if it is down
    if run is None:
        from facelab.runner import run_recipe as run
    url = storage_url(sweep, first.schema.tracking.uri)
    name = sweep.study_name()
    storage = open_storage(url, sweep, on_stale=lambda trial: _end_lost_run(sweep, trial))
    with stop_on_signals():
        study, parent_id = open_study(
            sweep, storage, url, lambda known: start_parent(sweep, recipes, name, url, known))
        parent = Parent(parent_id)
        result = StudyResult(name, shown_url(url), sweep.digest(), parent_id)
        worker = _Worker(sweep, study, storage, run, callbacks, on_start, load, parent, result)
        try:
            worker.work()
        except (KeyboardInterrupt, RunTerminated) as exc:
            if _count(storage, study, "RUNNING"):
                parent.leave()  # other workers go on and end it
            else:
                why = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) \
                    else "terminated (SIGTERM)"
                parent.call(tracking.finish, parent.run_id, "KILLED", why, None)
            raise
        except BaseException as exc:
            parent.call(tracking.finish, parent.run_id, "FAILED",
                        f"{type(exc).__name__}: {exc}", None)
            raise
        result.trials = trial_rows(sweep, study)
        result.complete = True
        finish_study(sweep, study, parent, result, first)
    if result.failed:
        raise SweepFailed(result)
    return result


@dataclass
class _Worker:
    """One process's share of a study: takes trials, runs them, tells Optuna."""

    sweep: Sweep
    study: Any
    storage: Any
    run: Callable[..., Any]
    callbacks: Callable[[Any], list] | None
    on_start: Callable[[int, int, str], None] | None
    load: Callable[..., Any] | None
    parent: Parent
    result: StudyResult

    def work(self) -> None:
        """Take WAITING trials until none is left, failing (and so retrying) stale ones."""
        import optuna

        from facelab.signals import raise_if_stopping

        study_id = self.storage.get_study_id_from_name(self.study.study_name)
        poll = min(POLL, float(self.sweep.heartbeat.interval))
        while True:
            raise_if_stopping()
            optuna.storages.fail_stale_trials(self.study)
            trial_id = pop_waiting(self.storage, study_id)
            if trial_id is not None:
                self.run_trial(trial_id)
                continue
            if not _count(self.storage, self.study, "RUNNING"):
                return
            time.sleep(poll)

    def run_trial(self, trial_id: int) -> None:
        import optuna
        from optuna.trial import TrialState

        from facelab.errors import RunTerminated

        sweep, storage = self.sweep, self.storage
        number = storage.get_trial_number_from_id(trial_id)
        # a fresh Study object per trial: its sampler seeded for this trial, no stale cache
        study = optuna.load_study(study_name=self.study.study_name, storage=storage,
                                  sampler=make_sampler(sweep, number), pruner=make_pruner(sweep))
        # Optuna's ask() reads the trials before it hands one out; so does this (the study's
        # trial cache must know the trial before values are set on it)
        study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        self.result.ran_here.append(number)
        with heartbeat(storage, trial_id, sweep.heartbeat.interval):
            trial = optuna.Trial(study, trial_id)
            point = {key: suggest(trial, key, dimension)
                     for key, dimension in sweep.dimensions.items()}
            try:
                recipe = sweep.load(point, self.load)
            except FacelabError as exc:  # a sampled value the recipe refuses
                self._fail(study, trial, str(exc), None)
                return
            name = sweep.label(recipe.name, point)
            trial.set_user_attr(RUN_NAME, name)
            if self.on_start:
                self.on_start(number, sweep.size(), name)
            tags = {"facelab.sweep_id": sweep.digest(), "facelab.sweep_role": "child",
                    "facelab.sweep_index": str(trial.user_attrs.get(SLOT, number)),
                    "facelab.sweep_combination": ", ".join(sweep.point_overrides(point))
                    or str(sweep.recipe_path(point)),
                    STUDY_TAG: study.study_name, TRIAL_TAG: str(number)}
            extra = list(self.callbacks(recipe)) if self.callbacks else []
            metric = pruning_metric(sweep, recipe)
            if metric is not None:
                from facelab.plugins.mlflow.pruning import ReportToOptuna

                extra.append(ReportToOptuna(trial, metric, recipe.tasks))
            try:
                outcome = self.run(recipe, name=name, tags=tags, callbacks=extra)
            except optuna.TrialPruned as exc:
                study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                self.parent.call(_mark_child, study.study_name, number, "PRUNED", str(exc))
                return
            except (KeyboardInterrupt, RunTerminated):
                # stopped by its worker's user or scheduler: failed, and enqueued again so
                # another worker (or this command run again) runs the point
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                if not _retried(study, number):  # (another worker may have judged it stale)
                    _RetryStale(sweep.heartbeat.max_retry, None)(study,
                                                                 storage.get_trial(trial_id))
                raise
            except FacelabError as exc:  # the user's to fix (an objective the run lacks ...)
                self._fail(study, trial, str(exc), None)
                raise
            except Exception as exc:
                self._fail(study, trial, f"{type(exc).__name__}: {exc}", number)
                return
            run_id = outcome.references.get("MLflow run")
            if run_id:
                trial.set_user_attr(RUN_ID, run_id)
            try:
                value = objective_value(sweep, recipe, outcome)
            except FacelabError as exc:
                self._fail(study, trial, str(exc), number)
                raise
            # skip_if_finished: a worker whose grace is shorter than our heartbeat interval
            # may have failed (and enqueued again) this trial meanwhile
            study.tell(trial, value, skip_if_finished=True)
            if run_id:
                self.parent.call(_set_child_state, run_id, "COMPLETE")

    def _fail(self, study, trial, error: str, number: int | None) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr(ERROR, error[:2000])
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if number is not None:
            self.parent.call(_mark_child, study.study_name, number, "FAIL", None)


def suggest(trial, key: str, dimension) -> Any:
    """The trial's value for ``key``: its fixed value (a grid point, a retried trial) or the
    sampler's. Categoricals are ``--set`` text."""
    distribution = dimension.distribution()
    if dimension.choices is not None:
        return trial.suggest_categorical(key, distribution.choices)
    if dimension.is_int:
        return trial.suggest_int(key, distribution.low, distribution.high,
                                 step=distribution.step, log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high,
                               step=distribution.step, log=distribution.log)


def pop_waiting(storage, study_id: int) -> int | None:
    """Take the first WAITING trial (WAITING -> RUNNING, which one worker wins); ``None`` when
    none is waiting. Optuna's ``ask()`` does the same, but then creates a new trial when none
    is waiting, which is what must not happen here."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    for frozen in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except UpdateFinishedTrialError:
            continue
    return None


def _retried(study, number: int) -> bool:
    """Whether trial ``number`` was enqueued again already (Optuna's retry history)."""
    return any(number in (t.system_attrs.get("retry_history") or [])
               for t in study.get_trials(deepcopy=False))


def _count(storage, study, state: str) -> int:
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    return len(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState[state],)))


def objective_value(sweep: Sweep, recipe, outcome) -> float:
    """The trial's objective: ``objective.metric`` of its final metrics; by default the first
    task's test accuracy, or validation accuracy without a test split."""
    from facelab.errors import did_you_mean
    from facelab.plugins.mlflow.comparison import headline_metric

    final = outcome.final_metrics()
    metric = sweep.objective.metric or headline_metric(final, recipe.tasks[0])
    if metric not in final:
        raise FacelabError(f"{sweep.where}: objective.metric: "
                           f"{did_you_mean(metric, final, what='metric')}")
    return float(final[metric])


# --------------------------------------------------------------------------------------------
# MLflow children
# --------------------------------------------------------------------------------------------

def _child_run(study_name: str, number: int, status: str | None = None):
    import mlflow

    found = mlflow.search_runs(
        filter_string=(f"tags.`{STUDY_TAG}` = '{study_name}' and "
                       f"tags.`{TRIAL_TAG}` = '{number}'"
                       + (f" and attributes.status = '{status}'" if status else "")),
        search_all_experiments=True, output_format="list", max_results=1)
    return found[0] if found else None


def _set_child_state(run_id: str, state: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_tag(run_id, STATE_TAG, state)


def _mark_child(study_name: str, number: int, state: str, error: str | None) -> None:
    """Tag a trial's MLflow run with its Optuna state (and why, for a pruned trial)."""
    import mlflow

    child = _child_run(study_name, number)
    if child is None:  # it stopped before its MLflow run started
        return
    client = mlflow.MlflowClient()
    client.set_tag(child.info.run_id, STATE_TAG, state)
    if error:
        client.set_tag(child.info.run_id, "facelab.error", error)


def _end_lost_run(sweep: Sweep, trial) -> None:
    """A dead worker's trial was failed and enqueued again: its MLflow run, left RUNNING by the
    SIGKILL, ends KILLED."""
    try:
        import mlflow

        child = _child_run(sweep.study_name(), trial.number, "RUNNING")
        if child is not None:
            client = mlflow.MlflowClient()
            client.set_tag(child.info.run_id, STATE_TAG, "FAIL")
            client.set_tag(child.info.run_id, "facelab.error",
                           f"worker lost: no heartbeat for {sweep.heartbeat.grace} s; the "
                           "trial was enqueued again")
            client.set_terminated(child.info.run_id, "KILLED")
    except Exception:  # bookkeeping only: the trial is retried whatever happens here
        pass


# --------------------------------------------------------------------------------------------
# The complete study
# --------------------------------------------------------------------------------------------

def trial_rows(sweep: Sweep, study) -> list[TrialRow]:
    """Every trial, best first (finished by objective, then the rest by number)."""
    retried: dict[int, int] = {}
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            retried[history[-1]] = t.number
    rows = [TrialRow(t.number, t.user_attrs.get(SLOT), t.state.name, dict(t.params),
                     t.value if t.state.name == "COMPLETE" else None,
                     t.user_attrs.get(RUN_NAME), t.user_attrs.get(RUN_ID),
                     t.user_attrs.get(ERROR), retried.get(t.number)) for t in trials]
    sign = -1.0 if sweep.objective.direction == "maximize" else 1.0
    return sorted(rows, key=lambda r: (r.value is None, sign * (r.value or 0.0), r.number))


def finish_study(sweep: Sweep, study, parent: Parent, result: StudyResult, recipe) -> None:
    """Log the study to the parent run and end it: FINISHED, or FAILED when trials were lost."""
    from facelab.plugins.mlflow import comparison, tracking

    counts = {state: sum(t.state == state for t in result.trials)
              for state in ("COMPLETE", "PRUNED")}
    parent.call(tracking.log_metrics, {
        "trials_complete": counts["COMPLETE"], "trials_pruned": counts["PRUNED"],
        "trials_failed": len(result.failed),
        **({"best_value": result.best.value} if result.best else {})}, None, parent.run_id)
    parent.call(_log_summary, sweep, result)
    parent.call(comparison.log, parent.run_id, recipe.tasks[0],
                sweep.objective.metric, sweep.objective.direction)
    if result.failed:
        parent.call(tracking.finish, parent.run_id, "FAILED",
                    f"SweepFailed: {SweepFailed(result)}", None)
    else:
        parent.call(tracking.finish, parent.run_id, "FINISHED", None, None)


def _log_summary(sweep: Sweep, result: StudyResult) -> None:
    """The best trial as tags, and ``sweep/study.json``: every trial's state, values, value,
    run name and id."""
    import mlflow

    client = mlflow.MlflowClient()
    best = result.best
    if best is not None:
        client.set_tag(result.parent_run_id, "facelab.optuna.best_trial", str(best.number))
        if best.run_id:
            client.set_tag(result.parent_run_id, "facelab.optuna.best_run", best.run_id)
        for key, value in best.params.items():
            client.set_tag(result.parent_run_id, f"facelab.optuna.best.{key}", str(value))
    client.log_dict(result.parent_run_id, {
        "study": result.study, "storage": result.storage, "sweep_id": result.sweep_id,
        "sampler": sweep.sampler, "objective": sweep.objective.model_dump(),
        "trials": [t.__dict__ for t in result.trials]}, "sweep/study.json")


def describe_space(sweep: Sweep) -> list[tuple[str, str]]:
    """(key, values) for each dimension: what a dry run prints for random and TPE."""
    return [(k, _describe(d)) for k, d in sweep.dimensions.items()]


def trial_table_rows(sweep: Sweep, points, recipes) -> list[tuple[str, str, str]]:
    """(number, run name, recipe file) for each grid point of a dry run."""
    return [(str(i), sweep.label(r.name, p), str(sweep.recipe_path(p)))
            for i, (p, r) in enumerate(zip(points, recipes))]
