"""``facelab paper-diff RUN_ID``: a run next to the numbers its paper reports.

The paper's numbers live beside its recipes as data, in ``paper.yaml`` (see
docs/comparing-configurations.md for the schema)::

    kind: paper-results
    paper: rohani2025                      # the recipes' ``paper:`` value
    recipes: {base: base.yaml, model2: bd-am.yaml}   # row -> recipe file (or list of files)
    device: NVIDIA Tesla T4                # where the paper timed its models
    parameters: {model2: {total: 11379605, trainable: 11292302, ram_mb: 43.41}}
    timing:     {model2: {ms_per_image: 0.30, fps: 3352, train_seconds_50_epochs: 2282}}
    classification:
      model2:                              # one task: the run's task ...
        accuracy: 0.88
        per_class: {white: {precision: 0.89, recall: 0.93, f1: 0.91, support: 2016}}
      config-b:                            # ... or several: task -> the same shape, or
        smile: {accuracy: 0.956}           #     task -> accuracy
        age: 67.81

Rates may be fractions or percentages (values above 1 are read as percent). Speeds come from
the run's own efficiency metrics and, when ``facelab bench --log`` recorded the same recipe in
the run's experiment, from the newest such bench run too (its training time is an estimate); a
device of another kind than the paper's (a CPU, an H100 against a Tesla T4) is marked
"different device". ``paper-diff`` of a bench run compares its parameters and speeds.

The row is the one whose recipe file is the run's recipe file (tag ``facelab.recipe_path``),
else the one named like the recipe, else ``--row``. The paper file is ``--paper``, else the
run's ``facelab.paper_file`` tag when that file exists, else the copy logged with the run
(``recipe/paper.yaml``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facelab.errors import FacelabError, did_you_mean
from facelab.plugins.bench.record import BENCH_TAG, DEVICE_TAG
from facelab.recipe import parse_yaml
from facelab.results import efficiency_name, metric_name

RATES = ("accuracy", "precision", "recall", "f1")
#: the paper file's score names -> ours (facelab.results.CLASS_SCORES)
SCORE_NAME = {"precision": "precision", "recall": "recall", "f1": "f1", "f1-score": "f1"}


@dataclass
class Line:
    """One quantity: paper value, run value, their difference, and how to read it."""

    section: str
    quantity: str
    metric: str | None      # the run's metric key, when there is one
    paper: float | None
    run: float | None
    exact: bool = False     # counts: equal or not; rates and speeds: a delta
    note: str = ""

    @property
    def delta(self) -> float | None:
        if self.paper is None or self.run is None:
            return None
        return self.run - self.paper

    @property
    def match(self) -> bool | None:
        if not self.exact or self.delta is None:
            return None
        return self.delta == 0

    def as_dict(self) -> dict[str, Any]:
        return {"section": self.section, "quantity": self.quantity, "metric": self.metric,
                "paper": self.paper, "run": self.run, "delta": self.delta,
                "exact": self.exact, "match": self.match, "note": self.note}


@dataclass
class PaperDiff:
    run_id: str
    run_name: str
    paper: str
    paper_file: str
    row: str
    paper_device: str | None
    run_device: str | None
    lines: list[Line] = field(default_factory=list)
    bench_run_id: str | None = None   # the bench run whose speeds are shown, if any

    @property
    def params_exact(self) -> bool | None:
        matches = [line.match for line in self.lines
                   if line.section == "parameters" and line.exact and line.match is not None]
        return all(matches) if matches else None

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_name": self.run_name, "paper": self.paper,
                "paper_file": self.paper_file, "row": self.row,
                "paper_device": self.paper_device, "run_device": self.run_device,
                "params_exact": self.params_exact, "bench_run_id": self.bench_run_id,
                "lines": [x.as_dict() for x in self.lines]}

    def markdown(self) -> str:
        out = [f"# {self.run_name} vs {self.paper} ({self.row})", "",
               f"run `{self.run_id}`; paper file `{self.paper_file}`; "
               f"speed: paper on {self.paper_device or 'an unnamed device'}, "
               f"run on {self.run_device or 'an unknown device'}", "",
               "| section | quantity | paper | run | delta | note |", "|---|---|---|---|---|---|"]
        for x in self.lines:
            out.append(f"| {x.section} | {x.quantity} | {fmt(x.paper)} | {fmt(x.run)} | "
                       f"{fmt(x.delta, sign=True)} | {x.note} |")
        return "\n".join(out) + "\n"


def fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    if float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):+,}" if sign else f"{int(value):,}"
    return f"{value:+.4f}" if sign else f"{value:.4f}"


def load_paper(path: Path) -> dict[str, Any]:
    try:
        data = parse_yaml(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FacelabError(f"{path}: paper file not found") from None
    except yaml.YAMLError as exc:
        raise FacelabError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not data.get("paper"):
        raise FacelabError(f"{path}: expected a mapping with 'paper: <id>' (a paper-results file)")
    for section in ("parameters", "timing", "classification", "recipes"):
        if section in data and not isinstance(data[section], dict):
            raise FacelabError(f"{path}: {section}: expected a mapping of row -> values")
    return data


def rows(paper: dict[str, Any]) -> list[str]:
    found: dict[str, None] = {}
    for section in ("recipes", "parameters", "timing", "classification"):
        found.update(dict.fromkeys(paper.get(section) or {}))
    return list(found)


def pick_row(paper: dict[str, Any], recipe_path: str | None, recipe_name: str | None,
             row: str | None, where: str) -> str:
    known = rows(paper)
    if row is not None:
        if row not in known:
            raise FacelabError(f"--row: {did_you_mean(row, known, what='paper row')}")
        return row
    if recipe_path:
        name = Path(recipe_path).name
        for key, files in (paper.get("recipes") or {}).items():
            files = files if isinstance(files, list) else [files]
            if any(Path(str(file)).name == name for file in files):
                return key
    if recipe_name in known:
        return recipe_name
    raise FacelabError(f"{where}: no row for recipe {recipe_name!r} "
                       f"({Path(recipe_path).name if recipe_path else 'no recipe file'}); "
                       f"pass --row, one of: {', '.join(known)}")


def rate(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value / 100 if value > 1 else value


def same_device(paper_device: str | None, run_device: str | None) -> bool | None:
    """Whether a run's device is the paper's kind: the model numbers in the paper's device name
    (``T4`` of "NVIDIA Tesla T4"; its words if it has none) all appear in the run's
    (``GPU: Tesla T4 (x1)``). ``None`` when either is unknown."""
    if not paper_device or not run_device:
        return None
    words = [w for w in re.findall(r"[a-z0-9]+", paper_device.lower()) if w != "nvidia"]
    wanted = [w for w in words if any(c.isdigit() for c in w)] or words
    found = set(re.findall(r"[a-z0-9]+", run_device.lower()))
    return all(w in found for w in wanted) if wanted else None


def device_note(paper_device: str | None, run_device: str | None, who: str = "run") -> str:
    """``paper: <device>; run: <device>``, and ``; different device`` when they differ."""
    note = f"paper: {paper_device or '?'}; {who}: {run_device or '?'}"
    return note + ("; different device" if same_device(paper_device, run_device) is False
                   else "")


def is_bench_run(run) -> bool:
    """Whether ``run`` was logged by ``facelab bench --log``."""
    return (getattr(run.data, "tags", None) or {}).get(BENCH_TAG) == "true"


def build(run, paper: dict[str, Any], paper_file: str, row: str, tasks: list[str],
          run_report: dict | None, efficiency: dict | None, bench_run=None) -> PaperDiff:
    """The lines for one run and one paper row; ``bench_run``'s speeds too, if given. A bench
    run (tag ``facelab.bench``) has parameters and speeds only."""
    metrics = run.data.metrics
    efficiency = efficiency or {}
    bench = is_bench_run(run)
    if bench:
        efficiency = {"device": run.data.tags.get(DEVICE_TAG),
                      "epochs": run.data.params.get("bench.epochs"), **efficiency}
    diff = PaperDiff(run.info.run_id, run.info.run_name, str(paper["paper"]), paper_file, row,
                     paper.get("device"), efficiency.get("device"))

    def add(section, quantity, metric, paper_value, exact=False, note="", run_value=None):
        value = metrics.get(metric) if metric else None
        diff.lines.append(Line(section, quantity, metric, paper_value,
                               run_value if run_value is not None else value, exact, note))

    counts = (paper.get("parameters") or {}).get(row) or {}
    for key, metric in (("total", "total_params"), ("trainable", "trainable_params")):
        if key in counts:
            add("parameters", f"{key} parameters", efficiency_name(metric), float(counts[key]),
                exact=True)
    if "ram_mb" in counts:
        add("parameters", "RAM (MB, eq. 7)", efficiency_name("ram_mb"), float(counts["ram_mb"]))

    classification = {} if bench else (paper.get("classification") or {}).get(row) or {}
    if any(k in classification for k in ("accuracy", "per_class", "macro", "weighted")):
        classification = {tasks[0]: classification} if tasks else {}
    for task, values in classification.items():
        if isinstance(values, (int, float)):
            values = {"accuracy": values}       # task: accuracy
        if not isinstance(values, dict) or (tasks and task not in tasks):
            continue                            # a task this run does not have
        task_metrics = (run_report or {}).get(task) or {}
        if "accuracy" in values:
            add(task, "test accuracy", metric_name("test", task, "accuracy"),
                rate(values["accuracy"]))
        groups = dict((values.get("per_class") or {}))
        for average in ("macro", "weighted"):
            if isinstance(values.get(average), dict):
                groups[average] = values[average]
        for cls, numbers in groups.items():
            if not isinstance(numbers, dict):
                continue
            average = cls in ("macro", "weighted")
            for key, value in numbers.items():
                if key in SCORE_NAME:
                    name = (metric_name("test", task, f"{SCORE_NAME[key]}_{cls}") if average
                            else metric_name("test", task, SCORE_NAME[key], str(cls)))
                    add(task, f"{cls} {key}", name, rate(value))
                elif key == "support":
                    scores = (task_metrics.get(cls) if average
                              else (task_metrics.get("per_class") or {}).get(str(cls))) or {}
                    support = scores.get("support")
                    add(task, f"{cls} support (test images)", None, float(value), exact=True,
                        run_value=float(support) if support is not None else None)

    timing = (paper.get("timing") or {}).get(row) or {}
    note = device_note(paper.get("device"), efficiency.get("device"),
                       "bench" if bench else "run")
    estimate = "bench estimate for" if bench else "run:"
    for key in ("ms_per_image", "fps"):
        if key in timing:
            add("speed", key.replace("_", " "), efficiency_name(key), float(timing[key]),
                note=note)
    for key, value in timing.items():
        if key.startswith("train_seconds"):
            epochs = efficiency.get("epochs")
            add("speed", key.replace("_", " "), efficiency_name("train_seconds"), float(value),
                note=f"{note}; {estimate} {epochs} epochs" if epochs else note)
    if bench_run is not None:
        diff.bench_run_id = bench_run.info.run_id
        _add_bench_lines(diff, paper, timing, bench_run)
    return diff


def _add_bench_lines(diff: PaperDiff, paper: dict[str, Any], timing: dict[str, Any],
                     bench_run) -> None:
    """Section ``speed (bench)``: the bench run's speeds against the paper's (logged to the
    run as ``paper_diff/bench/<metric>``)."""
    values = bench_run.data.metrics
    note = (f"{device_note(paper.get('device'), bench_run.data.tags.get(DEVICE_TAG), 'bench')}; "
            f"bench run {bench_run.info.run_id[:8]}")
    overrides = bench_run.data.tags.get("facelab.overrides")
    if overrides:
        note += f" ({overrides})"
    keys = [(key, key) for key in ("ms_per_image", "fps") if key in timing]
    keys += [(key, "train_seconds") for key in timing if key.startswith("train_seconds")]
    for key, metric in keys:
        value = values.get(efficiency_name(metric))
        extra = ""
        if metric == "train_seconds":
            extra = f"; estimate for {bench_run.data.params.get('bench.epochs', '?')} epochs"
        diff.lines.append(Line("speed (bench)", key.replace("_", " "), f"bench/{metric}",
                               float(timing[key]), value, note=note + extra))


def find_bench_run(mlflow_client, run):
    """The newest bench run of the run's recipe in its experiment (preferring one of the same
    recipe digest), or ``None``."""
    recipe = run.data.tags.get("facelab.recipe")
    if not recipe or is_bench_run(run):
        return None
    found = [r for r in mlflow_client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`{BENCH_TAG}` = 'true'",
        order_by=["attributes.start_time DESC"], max_results=500)
        if r.data.tags.get("facelab.recipe") == recipe]
    digest = run.data.tags.get("facelab.recipe_hash")
    same = [r for r in found if digest and r.data.tags.get("facelab.recipe_hash") == digest]
    return (same or found or [None])[0]


def find_paper_file(mlflow_client, run, explicit: Path | None, workdir: Path) -> Path:
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FacelabError(f"--paper {explicit}: file not found")
        return Path(explicit)
    tagged = run.data.tags.get("facelab.paper_file")
    if tagged and Path(tagged).is_file():
        return Path(tagged)
    try:
        local = mlflow_client.download_artifacts(run.info.run_id, "recipe/paper.yaml",
                                                 str(workdir))
        return Path(local)
    except Exception:
        pass
    if not run.data.tags.get("facelab.paper"):
        raise FacelabError(f"run {run.info.run_id}: its recipe has no 'paper:' key, so there is "
                           "no paper to compare with; pass --paper FILE")
    raise FacelabError(f"run {run.info.run_id}: no paper.yaml was found beside its recipe "
                       f"({run.data.tags.get('facelab.recipe_path', '?')}); pass --paper FILE")


def _artifact_json(mlflow_client, run_id: str, path: str, workdir: Path) -> dict | None:
    try:
        local = mlflow_client.download_artifacts(run_id, path, str(workdir))
        return json.loads(Path(local).read_text())
    except Exception:
        return None


def paper_diff(mlflow_client, run, paper_file: Path | None = None, row: str | None = None,
               log: bool = True) -> PaperDiff:
    """Compare ``run`` with its paper's row; log the table (artifact + metrics) to the run."""
    # the artifacts read here are a few kB: MLflow's progress bars would only clutter the output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory(prefix="facelab-paper-diff-") as tmp:
        work = Path(tmp)
        path = find_paper_file(mlflow_client, run, paper_file, work)
        paper = load_paper(path)
        tagged = run.data.tags.get("facelab.paper")
        if tagged and str(paper["paper"]) != tagged:
            raise FacelabError(f"{path}: is for paper {paper['paper']!r}, but the run's recipe "
                               f"reproduces {tagged!r}")
        chosen = pick_row(paper, run.data.tags.get("facelab.recipe_path"),
                          run.data.tags.get("facelab.recipe"), row, str(path))
        metrics = _artifact_json(mlflow_client, run.info.run_id, "reports/metrics.json", work)
        # a bench run's device and epochs are its tag and param (build reads them)
        efficiency = None if is_bench_run(run) else _artifact_json(
            mlflow_client, run.info.run_id, "reports/efficiency.json", work)
        tasks = list((metrics or {}).get("test") or {}) or _tasks_from_params(run)
        shown = paper_file if paper_file is not None else \
            run.data.tags.get("facelab.paper_file") or "recipe/paper.yaml (logged with the run)"
        diff = build(run, paper, str(shown), chosen, tasks, (metrics or {}).get("test"),
                     efficiency, find_bench_run(mlflow_client, run))
        if not diff.lines:
            raise FacelabError(f"{path}: row {chosen!r} has no parameters, timing or "
                               "classification numbers")
        if log:
            log_diff(mlflow_client, diff, work)
    return diff


def _tasks_from_params(run) -> list[str]:
    return sorted({k.split(".")[2] for k in run.data.params if k.startswith("model.heads.")})


def log_diff(mlflow_client, diff: PaperDiff, work: Path) -> None:
    """Artifacts ``paper_diff/paper_diff.{json,md}``, metrics ``paper_diff/<metric>`` (deltas),
    tags ``facelab.paper_row`` and ``facelab.paper_params_exact``."""
    import time

    from mlflow.entities import Metric, RunTag

    folder = work / "paper_diff"
    folder.mkdir()
    (folder / "paper_diff.json").write_text(json.dumps(diff.as_dict(), indent=2))
    (folder / "paper_diff.md").write_text(diff.markdown())
    mlflow_client.log_artifacts(diff.run_id, str(folder), "paper_diff")
    now = int(time.time() * 1000)
    metrics = [Metric(f"paper_diff/{x.metric}", float(x.delta), now, 0)
               for x in diff.lines if x.metric and x.delta is not None]
    tags = [RunTag("facelab.paper_row", diff.row)]
    if diff.params_exact is not None:
        tags.append(RunTag("facelab.paper_params_exact", str(diff.params_exact).lower()))
    mlflow_client.log_batch(diff.run_id, metrics=metrics, tags=tags)
