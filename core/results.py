"""Typed results of a run: data counts, per-task metrics, efficiency and the run result.

Every result is a frozen dataclass with a JSON form (``to_json()``, ``from_json()``). Metric
names are made by :func:`metric_name` (final) and :func:`epoch_metric_name` (per epoch), and read
back by :func:`parse_metric_name`; everything that shows or logs metrics goes through them.

Names are slash-separated so the MLflow UI groups them::

    test/race/accuracy            test/race/f1/white        test/race/f1_macro
    val/race/worst_group_accuracy efficiency/fps            epoch/train/loss
    epoch/val/race/accuracy       epoch/learning_rate
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: Per-class scores, as named in metric names.
CLASS_SCORES = ("precision", "recall", "f1")
#: Averages over classes, as metric-name suffixes (``f1_macro``).
AVERAGES = ("macro", "weighted")
#: The efficiency namespace in metric names.
EFFICIENCY = "efficiency"
#: The per-epoch namespace in metric names.
EPOCH = "epoch"


# --------------------------------------------------------------------------------------------
# Metric names
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricName:
    """A parsed metric name. ``kind`` is ``final``, ``epoch`` or ``efficiency``."""

    kind: str
    metric: str
    split: str | None = None
    task: str | None = None
    cls: str | None = None

    @property
    def is_headline(self) -> bool:
        """Overall test accuracy or macro F1 of a task: what run lists show first."""
        return (self.kind == "final" and self.split == "test" and self.cls is None
                and self.metric in ("accuracy", "f1_macro"))


def metric_name(split: str, task: str, metric: str, cls: str | None = None) -> str:
    """``test/race/accuracy``, ``test/race/f1/white`` (per class), ``test/race/f1_macro``."""
    return "/".join([split, task, metric, *([cls] if cls is not None else [])])


def efficiency_name(key: str) -> str:
    """``efficiency/fps``."""
    return f"{EFFICIENCY}/{key}"


def epoch_metric_name(split: str, metric: str, task: str | None = None) -> str:
    """``epoch/train/loss``, ``epoch/val/race/accuracy``; ``epoch/learning_rate`` (split ``""``)."""
    return "/".join(p for p in (EPOCH, split, task, metric) if p)


#: Names the first wave logged (flat, underscore-separated), still read so old runs display.
_LEGACY_EFFICIENCY = ("total_params", "trainable_params", "ram_mb", "ms_per_image", "fps",
                      "train_seconds")


def parse_metric_name(name: str) -> MetricName | None:
    """The parts of a metric name made by this module (or a first-wave flat name such as
    ``test_race_accuracy``); ``None`` for anything else."""
    parts = name.split("/")
    if parts[0] == EFFICIENCY and len(parts) == 2:
        return MetricName("efficiency", parts[1])
    if parts[0] == EPOCH:
        rest = parts[1:]
        if len(rest) == 1:
            return MetricName("epoch", rest[0])
        if len(rest) == 2:
            return MetricName("epoch", rest[1], split=rest[0])
        if len(rest) == 3:
            return MetricName("epoch", rest[2], split=rest[0], task=rest[1])
        return None
    if len(parts) == 3:
        return MetricName("final", parts[2], split=parts[0], task=parts[1])
    if len(parts) == 4:
        return MetricName("final", parts[2], split=parts[0], task=parts[1], cls=parts[3])
    return _parse_legacy(name)


def _parse_legacy(name: str) -> MetricName | None:
    if name in _LEGACY_EFFICIENCY:
        return MetricName("efficiency", name)
    split, _, rest = name.partition("_")
    if split not in ("test", "val") or not rest:
        return None
    for suffix, metric in (("_macro_avg_f1-score", "f1_macro"), ("_accuracy", "accuracy")):
        if rest.endswith(suffix) and "group" not in rest:
            return MetricName("final", metric, split=split, task=rest[: -len(suffix)])
    return None


def epoch_metrics(logs: dict[str, Any], tasks: list[str]) -> dict[str, float]:
    """Keras's epoch logs under :func:`epoch_metric_name` names.

    ``loss`` -> ``epoch/train/loss``, ``val_race_loss`` -> ``epoch/val/race/loss``, a
    single-task model's bare ``accuracy`` -> ``epoch/train/race/accuracy``.
    """
    out: dict[str, float] = {}
    for key, value in logs.items():
        if key == "learning_rate":
            out[epoch_metric_name("", key)] = float(value)
            continue
        split, name = ("val", key[4:]) if key.startswith("val_") else ("train", key)
        task = next((t for t in tasks if name.startswith(f"{t}_")), None)
        if task is not None:
            name = name[len(task) + 1:]
        elif name != "loss" and len(tasks) == 1:
            task = tasks[0]
        out[epoch_metric_name(split, name, task)] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# Per-task metrics
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class GroupScore:
    """Accuracy over one group, e.g. ``{"race": "white", "gender": "female"}``."""

    group: dict[str, str]
    n: int
    accuracy: float


@dataclass(frozen=True)
class GroupMetrics:
    """Accuracy per combination of the task's true class and the ``evaluate.groups`` columns."""

    columns: tuple[str, ...]
    groups: tuple[GroupScore, ...]

    @property
    def worst(self) -> GroupScore | None:
        return min(self.groups, key=lambda g: g.accuracy) if self.groups else None

    @property
    def best(self) -> GroupScore | None:
        return max(self.groups, key=lambda g: g.accuracy) if self.groups else None

    @property
    def gap(self) -> float | None:
        """Best minus worst group accuracy."""
        return self.best.accuracy - self.worst.accuracy if self.groups else None

    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "groups": [asdict(g) for g in self.groups],
                "worst": asdict(self.worst) if self.worst else None,
                "best": asdict(self.best) if self.best else None, "gap": self.gap}

    @staticmethod
    def from_json(value: dict[str, Any]) -> GroupMetrics:
        return GroupMetrics(tuple(value["columns"]),
                            tuple(GroupScore(**g) for g in value.get("groups", [])))


@dataclass(frozen=True)
class TaskMetrics:
    """One task on one split: accuracy, per-class scores, averages, confusion, groups."""

    task: str
    classes: tuple[str, ...]
    n: int
    accuracy: float
    per_class: dict[str, ClassScores]
    macro: ClassScores | None
    weighted: ClassScores | None
    confusion: tuple[tuple[int, ...], ...]
    groups: GroupMetrics | None = None

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """Rows (true classes) divided by their sums; empty rows stay 0."""
        return [[round(v / sum(row), 4) if sum(row) else 0.0 for v in row]
                for row in self.confusion]

    def flat(self, split: str) -> dict[str, float]:
        """This task's final metrics under :func:`metric_name` names."""
        out = {metric_name(split, self.task, "accuracy"): self.accuracy}
        for cls, scores in self.per_class.items():
            for score in CLASS_SCORES:
                out[metric_name(split, self.task, score, cls)] = getattr(scores, score)
        for average in AVERAGES:
            scores = getattr(self, average)
            if scores is not None:
                for score in CLASS_SCORES:
                    out[metric_name(split, self.task, f"{score}_{average}")] = getattr(scores, score)
        if self.groups is not None and self.groups.groups:
            out[metric_name(split, self.task, "worst_group_accuracy")] = self.groups.worst.accuracy
            out[metric_name(split, self.task, "group_gap")] = self.groups.gap
        return out

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "classes": list(self.classes), "n": self.n,
                "accuracy": self.accuracy,
                "per_class": {c: asdict(s) for c, s in self.per_class.items()},
                "macro": asdict(self.macro) if self.macro else None,
                "weighted": asdict(self.weighted) if self.weighted else None,
                "confusion": [list(r) for r in self.confusion],
                "confusion_normalized": self.confusion_normalized,
                "groups": self.groups.to_json() if self.groups else None}

    @staticmethod
    def from_json(value: dict[str, Any]) -> TaskMetrics:
        def scores(v):
            return ClassScores(**v) if v else None

        return TaskMetrics(
            value["task"], tuple(value["classes"]), value["n"], value["accuracy"],
            {c: ClassScores(**s) for c, s in value["per_class"].items()},
            scores(value.get("macro")), scores(value.get("weighted")),
            tuple(tuple(r) for r in value["confusion"]),
            GroupMetrics.from_json(value["groups"]) if value.get("groups") else None)


#: split -> task -> metrics
SplitMetrics = dict[str, dict[str, TaskMetrics]]


# --------------------------------------------------------------------------------------------
# Fairness: per-group metrics with bootstrap intervals (computed by facelab.fairness)
# --------------------------------------------------------------------------------------------

#: The flag of a group too small to judge (fewer samples than ``evaluate.min_group_size``).
TOO_SMALL = "too small to judge"


@dataclass(frozen=True)
class Estimate:
    """A rate, its bootstrap interval (``None`` without resampling) and the samples behind it."""

    value: float
    low: float | None
    high: float | None
    n: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(value: dict[str, Any]) -> Estimate:
        return Estimate(value["value"], value.get("low"), value.get("high"), value["n"])


def group_label(group: dict[str, str]) -> str:
    """``gender=female x age=20-39``; ``all`` for everyone."""
    return " x ".join(f"{k}={v}" for k, v in group.items()) or "all"


@dataclass(frozen=True)
class GroupFairness:
    """One group (``{}`` = everyone): accuracy, and per class the recall (true positive rate)
    and the false positive rate; ``small``: fewer samples than the minimum, not ranked."""

    group: dict[str, str]
    accuracy: Estimate
    recall: dict[str, Estimate]
    fpr: dict[str, Estimate]
    small: bool = False

    @property
    def n(self) -> int:
        return self.accuracy.n

    @property
    def label(self) -> str:
        return group_label(self.group)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.group)

    def to_json(self) -> dict[str, Any]:
        return {"group": dict(self.group), "n": self.n, "small": self.small,
                "accuracy": self.accuracy.to_json(),
                "recall": {c: e.to_json() for c, e in self.recall.items()},
                "fpr": {c: e.to_json() for c, e in self.fpr.items()}}

    @staticmethod
    def from_json(value: dict[str, Any]) -> GroupFairness:
        return GroupFairness(dict(value["group"]), Estimate.from_json(value["accuracy"]),
                             {c: Estimate.from_json(e) for c, e in value["recall"].items()},
                             {c: Estimate.from_json(e) for c, e in value["fpr"].items()},
                             bool(value.get("small", False)))


@dataclass(frozen=True)
class GroupGap:
    """Best minus worst accuracy among the judged groups of one set of columns."""

    columns: tuple[str, ...]
    best: dict[str, str]
    worst: dict[str, str]
    gap: Estimate

    def to_json(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "best": dict(self.best),
                "worst": dict(self.worst), "gap": self.gap.to_json()}

    @staticmethod
    def from_json(value: dict[str, Any]) -> GroupGap:
        return GroupGap(tuple(value["columns"]), dict(value["best"]), dict(value["worst"]),
                        Estimate.from_json(value["gap"]))


@dataclass(frozen=True)
class TaskFairness:
    """One task on one split: everyone, then every group and intersection of groups.

    ``columns`` are the group columns used (the task's true class first); ``left_out`` the
    columns that could not be used, with the reason. Groups with fewer than ``min_group_size``
    samples are flagged :data:`TOO_SMALL` and left out of :attr:`worst` and the gaps.
    """

    task: str
    classes: tuple[str, ...]
    columns: tuple[str, ...]
    overall: GroupFairness
    groups: tuple[GroupFairness, ...]
    gaps: tuple[GroupGap, ...]
    resamples: int
    confidence: float
    min_group_size: int
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def judged(self) -> tuple[GroupFairness, ...]:
        return tuple(g for g in self.groups if not g.small)

    @property
    def small_groups(self) -> tuple[GroupFairness, ...]:
        return tuple(g for g in self.groups if g.small)

    @property
    def worst(self) -> GroupFairness | None:
        """The judged group with the lowest accuracy."""
        return min(self.judged, key=lambda g: g.accuracy.value, default=None)

    @property
    def largest_gap(self) -> GroupGap | None:
        return max(self.gaps, key=lambda g: g.gap.value, default=None)

    def rows(self, split: str) -> list[dict[str, Any]]:
        """One row per group and metric (accuracy, recall, fpr per class), then one per gap:
        ``split, task, group, metric, class, value, low, high, n, flag``."""
        worst, largest = self.worst, self.largest_gap
        out = []
        for group in (self.overall, *self.groups):
            flag = TOO_SMALL if group.small else "worst group" if group is worst else ""
            out.append(_row(split, self.task, group.label, "accuracy", "", group.accuracy, flag))
            for metric in ("recall", "fpr"):
                for cls, estimate in getattr(group, metric).items():
                    small = estimate.n < self.min_group_size
                    out.append(_row(split, self.task, group.label, metric, cls, estimate,
                                    TOO_SMALL if small else ""))
        for gap in self.gaps:
            out.append(_row(split, self.task, " x ".join(gap.columns), "accuracy_gap",
                            "", gap.gap, "largest gap" if gap is largest else "",
                            f"{group_label(gap.best)} vs {group_label(gap.worst)}"))
        return out

    def to_json(self) -> dict[str, Any]:
        worst, largest = self.worst, self.largest_gap
        return {"task": self.task, "classes": list(self.classes), "columns": list(self.columns),
                "left_out": dict(self.left_out), "resamples": self.resamples,
                "confidence": self.confidence, "min_group_size": self.min_group_size,
                "overall": self.overall.to_json(),
                "worst": worst.to_json() if worst else None,
                "largest_gap": largest.to_json() if largest else None,
                "gaps": [g.to_json() for g in self.gaps],
                "groups": [g.to_json() for g in self.groups]}

    @staticmethod
    def from_json(value: dict[str, Any]) -> TaskFairness:
        return TaskFairness(
            value["task"], tuple(value["classes"]), tuple(value["columns"]),
            GroupFairness.from_json(value["overall"]),
            tuple(GroupFairness.from_json(g) for g in value["groups"]),
            tuple(GroupGap.from_json(g) for g in value["gaps"]), value["resamples"],
            value["confidence"], value["min_group_size"], dict(value.get("left_out", {})))


def _row(split: str, task: str, group: str, metric: str, cls: str, estimate: Estimate,
         flag: str, note: str = "") -> dict[str, Any]:
    return {"split": split, "task": task, "group": group, "metric": metric, "class": cls,
            "value": estimate.value, "low": estimate.low, "high": estimate.high,
            "n": estimate.n, "flag": flag, "note": note}


#: split -> task -> fairness
SplitFairness = dict[str, dict[str, TaskFairness]]


def fairness_to_json(fairness: SplitFairness) -> dict[str, Any]:
    return {split: {task: f.to_json() for task, f in tasks.items()}
            for split, tasks in fairness.items()}


def fairness_from_json(value: dict[str, Any]) -> SplitFairness:
    return {split: {task: TaskFairness.from_json(f) for task, f in tasks.items()}
            for split, tasks in value.items()}


def metrics_to_json(metrics: SplitMetrics) -> dict[str, Any]:
    return {split: {task: m.to_json() for task, m in tasks.items()}
            for split, tasks in metrics.items()}


def metrics_from_json(value: dict[str, Any]) -> SplitMetrics:
    return {split: {task: TaskMetrics.from_json(m) for task, m in tasks.items()}
            for split, tasks in value.items()}


# --------------------------------------------------------------------------------------------
# Efficiency and data counts
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Efficiency:
    """Size and speed of the trained model on the machine that ran it."""

    device: str
    total_params: int
    trainable_params: int
    non_trainable_params: int
    ram_mb: float
    train_seconds: float
    epochs: int  # epochs trained (fewer than the recipe's after early stopping)
    train_samples: int  # rows of the training set (its plan, synthetic rows included)
    batch_size: int
    images_timed: int
    ms_per_image: float
    fps: float
    replicas: int = 1  # devices training ran on (train.distribute); 1 in runs before it
    train_images: int = 0  # images the training steps read in all; 0 in runs before it

    #: fields logged as metrics (the rest describe the measurement)
    LOGGED = ("total_params", "trainable_params", "ram_mb", "ms_per_image", "fps",
              "train_seconds", "replicas")

    def flat(self) -> dict[str, float]:
        return {efficiency_name(k): float(getattr(self, k)) for k in self.LOGGED}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(value: dict[str, Any]) -> Efficiency:
        names = {f.name for f in fields(Efficiency)}
        return Efficiency(**{k: v for k, v in value.items() if k in names})


@dataclass(frozen=True)
class StageCounts:
    """Samples at one data stage: per task and class, per source, in all, and synthetic."""

    classes: dict[str, dict[str, int]]
    sources: dict[str, int]
    total: int
    synthetic: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.classes, "sources": self.sources, "total": self.total}
        if self.synthetic is not None:
            out["synthetic"] = self.synthetic
        return out


@dataclass(frozen=True)
class DataCounts:
    """Class counts at every stage (the race paper's Fig. 3) and what loading left out."""

    stages: dict[str, StageCounts]
    skipped: dict[str, int] = field(default_factory=dict)
    detector: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, stage in self.stages.items():
            out[name] = stage.to_json()
            if name == "found":
                out["skipped"], out["detector"] = dict(self.skipped), dict(self.detector)
        return out


# --------------------------------------------------------------------------------------------
# The run result
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """What a finished run produced. ``references`` are what observers reported when the run
    started (e.g. ``{"MLflow run": "<id>"}``)."""

    run: Any  # facelab.run.Run
    metrics: SplitMetrics
    counts: DataCounts
    efficiency: Efficiency
    history: dict[str, list[float]]
    references: dict[str, str] = field(default_factory=dict)
    fairness: SplitFairness = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return self.run.output_dir

    def final_metrics(self) -> dict[str, float]:
        """Every final metric under its name: per split and task, then efficiency."""
        out: dict[str, float] = {}
        for split, tasks in self.metrics.items():
            for task in tasks.values():
                out.update(task.flat(split))
        out.update(self.efficiency.flat())
        return out

    def headline(self) -> dict[str, float]:
        """Test accuracy and macro F1 per task, parameters and FPS: what sweeps summarise."""
        keep = {efficiency_name("total_params"), efficiency_name("fps")}
        return {k: v for k, v in self.final_metrics().items()
                if k in keep or (parse_metric_name(k) and parse_metric_name(k).is_headline)}

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run.to_json(), "metrics": metrics_to_json(self.metrics),
                "counts": self.counts.to_json(), "efficiency": self.efficiency.to_json(),
                "history": self.history, "references": dict(self.references),
                "fairness": fairness_to_json(self.fairness)}
