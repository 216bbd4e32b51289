"""Per-class and per-group tables for every run, as JSON and CSV in ``<run>/reports/``.

An observer of the ``run_finished`` hook: ``<split>_<task>_report.{json,csv}`` (precision,
recall, F1 and support per class, macro and weighted averages), ``<split>_<task>_groups.csv``
(accuracy per group, when ``evaluate.groups`` or the task give groups) and
``<split>_<task>_fairness.csv`` (per group and intersection: accuracy, recall and false positive
rate with bootstrap intervals, counts and flags; see ``facelab.fairness``).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

import facelab
from facelab.results import TaskMetrics

COLUMNS = ("class", "precision", "recall", "f1", "support")


def report_rows(metrics: TaskMetrics) -> list[dict]:
    """One row per class, then the macro and weighted averages."""
    rows = [{"class": cls, **asdict(scores)} for cls, scores in metrics.per_class.items()]
    for average in ("macro", "weighted"):
        scores = getattr(metrics, average)
        if scores is not None:
            rows.append({"class": f"{average} avg", **asdict(scores)})
    return rows


def _csv(rows: list[dict], columns) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@facelab.hookimpl
def run_finished(run, result, outputs):
    from facelab.files import write_text

    folder = run.output_dir / "reports"
    for split, tasks in result.metrics.items():
        for task, m in tasks.items():
            rows = report_rows(m)
            write_text(folder / f"{split}_{task}_report.json", json.dumps(rows, indent=2))
            write_text(folder / f"{split}_{task}_report.csv", _csv(rows, COLUMNS))
            if m.groups is not None and m.groups.groups:
                group_rows = [{**g.group, "n": g.n, "accuracy": g.accuracy}
                              for g in m.groups.groups]
                write_text(folder / f"{split}_{task}_groups.csv",
                           _csv(group_rows, [*m.groups.columns, "n", "accuracy"]))
    for split, tasks in result.fairness.items():
        for task, fairness in tasks.items():
            rows = fairness.rows(split)
            write_text(folder / f"{split}_{task}_fairness.csv", _csv(rows, list(rows[0])))
