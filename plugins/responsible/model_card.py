"""The model card: every run writes ``model_card.md`` into its output folder.

The card says what the model is for and what it is not fit for, states plainly that race and
gender labels are annotators' perceptions, and gives the data (source, licence and citation as
the dataset plugin declares them, counts, class balance), the split protocol (and whether the
validation set holds synthetic samples), the metrics and per-group metrics with their
intervals, detector sensitivity when it was measured, efficiency, and the versions that made
the run. It is rendered only from the run folder's files (``run.json``, ``data_counts.json``,
``metrics.json``, ``fairness.json``, ``efficiency.json``, ``sensitivity.json`` when present), so
:func:`write_model_card` can refresh it after the run (``facelab sensitivity`` does). An
observer of ``run_finished``; the MLflow plugin, which runs last, logs it with the folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import facelab

#: The card's file name in the output folder.
CARD_FILE = "model_card.md"
#: Run-folder files the card reads.
FILES = {"counts": "data_counts.json", "metrics": "metrics.json", "fairness": "fairness.json",
         "efficiency": "efficiency.json", "sensitivity": "sensitivity.json"}
NOT_DECLARED = "not declared by the dataset plugin"

INTENDED_USE = """\
- Research and teaching about face-attribute classifiers: how they are built, how well they do,
  and for whom they fail (the per-group results below).
- Comparing model configurations on the data described below, under its licence terms."""

NOT_FIT_FOR = """\
- Any decision about a person: identification or verification, surveillance, policing or
  border control, hiring, credit, insurance, education, access to services or places, medical
  or psychological assessment.
- Inferring the race, ethnicity, gender or age of real people, or labelling them with it.
- Data unlike the data below (other cameras, lighting, poses, ages, populations) without a new
  evaluation on that data, per group.
- Any use the data's licence does not allow (see Data: several face datasets are for
  non-commercial research only)."""

LABELS_STATEMENT = """\
Inferring race or gender from a face is contested. Race and gender are social categories, not
visual facts: how a face looks does not tell who a person is or how they identify. The labels
this model learned and is evaluated against are annotators' perceptions (or a dataset's
recorded guesses), not the identities of the people pictured, and the category sets are the
dataset's choices (for example, two genders and a handful of race groups). A model trained on
them reproduces those perceptions and their biases; its accuracy means agreement with the
annotators, not correctness about people."""


@facelab.hookimpl
def run_finished(run, result, outputs):
    """Write the run's model card (before the MLflow plugin, which runs last, logs the folder)."""
    write_model_card(run.output_dir)


def write_model_card(output_dir: str | Path) -> Path:
    """Render ``model_card.md`` from the files in the run's output folder and write it
    (atomically); returns its path. Files that are missing are reported as not recorded."""
    from facelab.files import write_text

    folder = Path(output_dir)
    path = folder / CARD_FILE
    write_text(path, render(read_run_files(folder)))
    return path


def read_run_files(folder: Path) -> dict[str, Any]:
    """The run's ``run.json``, its resolved recipe and the result files (None when absent)."""
    from facelab.recipe import parse_yaml

    files: dict[str, Any] = {"folder": folder}
    for key, name in {"run": "run.json", **FILES}.items():
        path = folder / name
        files[key] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    resolved = ((files["run"] or {}).get("recipe") or {}).get("resolved")
    if resolved is None and (folder / "recipe.yaml").is_file():
        resolved = (folder / "recipe.yaml").read_text(encoding="utf-8")
    files["recipe"] = parse_yaml(resolved) if resolved else {}
    return files


def render(files: dict[str, Any]) -> str:
    """The card's Markdown."""
    run, recipe = files["run"] or {}, files["recipe"]
    sections = [
        f"# Model card: {run.get('name') or recipe.get('name', files['folder'].name)}",
        recipe.get("description") or "",
        _provenance(files),
        "## Model\n\n" + _model(files),
        "## Intended use\n\n" + INTENDED_USE,
        "## Uses it is not fit for\n\n" + NOT_FIT_FOR,
        "## About the labels\n\n" + LABELS_STATEMENT,
        "## Data\n\n" + _data(files),
        "## Split protocol\n\n" + _split(files),
        "## Metrics\n\n" + _metrics(files),
        "## Metrics per group\n\n" + _fairness(files),
        "## Detector sensitivity\n\n" + _sensitivity(files["sensitivity"]),
        "## Efficiency\n\n" + _efficiency(files["efficiency"]),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _provenance(files: dict[str, Any]) -> str:
    run = files["run"] or {}
    tags = run.get("tags", {})
    started = run.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if started else "-"
    commit = tags.get("facelab.git_commit")
    dirty = "with" if tags.get("facelab.git_dirty") == "true" else "no"
    rows = [["run", f"{run.get('id', '-')} ({run.get('status', 'status not recorded')}), "
                    f"started {when}"],
            ["recipe", f"{tags.get('facelab.recipe', files['recipe'].get('name', '-'))}, hash "
                       f"{tags.get('facelab.recipe_hash', '-')}"
                       + (f", {tags['facelab.recipe_path']}" if "facelab.recipe_path" in tags
                          else "")],
            ["overrides", tags.get("facelab.overrides", "none")],
            ["facelab version", tags.get("facelab.version", "-")],
            ["plugin packages", tags.get("facelab.plugins", "-")],
            ["git commit", f"{commit} ({dirty} uncommitted changes)" if commit
             else "not in a git repository"],
            ["output folder", str(files["folder"])]]
    return _table(["", ""], rows)


def _model(files: dict[str, Any]) -> str:
    tags = (files["run"] or {}).get("tags", {})
    lines = []
    for task, classes in _tasks(files).items():
        lines.append(f"- Task `{task}`: {len(classes)} classes ({', '.join(classes)}).")
    components = {k.removeprefix("facelab.component."): v for k, v in tags.items()
                  if k.startswith("facelab.component.")}
    if components:
        lines.append("- Components (name, package and version, plugin module):")
        lines += [f"  - `{where}`: {what}" for where, what in components.items()]
    return "\n".join(lines) or "Not recorded."


def _tasks(files: dict[str, Any]) -> dict[str, list[str]]:
    """Trained task -> class names, from the metrics (else the recipe's heads)."""
    out: dict[str, list[str]] = {}
    for tasks in (files["metrics"] or {}).values():
        for task, metrics in tasks.items():
            out.setdefault(task, list(metrics["classes"]))
    for task in ((files["recipe"].get("model") or {}).get("heads") or {}):
        out.setdefault(task, [])
    return out


def _sources(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    data = recipe.get("data") or {}
    if data.get("datasets"):
        return dict(data["datasets"])
    return {"default": data["dataset"]} if data.get("dataset") else {}


def dataset_terms(spec: dict[str, Any], where: str) -> dict[str, str | None]:
    """The licence and citation the dataset's plugin declares for these parameters."""
    from facelab.errors import FacelabError
    from facelab.manager import get_registry

    try:
        component = get_registry().get("dataset", spec.get("type"), where=where)
        params = component.validate({k: v for k, v in spec.items() if k != "type"}, where)
    except FacelabError as exc:
        return {"licence": None, "citation": None, "problem": str(exc)}
    origin = component.origin
    return {**component.terms(params),
            "plugin": f"{origin.plugin}, {origin.package} {origin.version}"}


def _data(files: dict[str, Any]) -> str:
    parts = []
    for name, spec in _sources(files["recipe"]).items():
        where = "data.dataset" if name == "default" else f"data.datasets.{name}"
        terms = dataset_terms(spec, where)
        root = spec.get("root") or spec.get("tables")
        lines = [f"- Source `{name}`: dataset `{spec.get('type')}`"
                 + (f" ({terms['plugin']})" if terms.get("plugin") else "")
                 + (f", from {root}" if root else ""),
                 f"  - Licence / terms of use: {terms['licence'] or NOT_DECLARED}",
                 f"  - Citation: {terms['citation'] or NOT_DECLARED}"]
        if terms.get("problem"):
            lines.append(f"  - (the plugin could not be asked: {terms['problem']})")
        parts.append("\n".join(lines))
    counts = files["counts"]
    if counts is None:
        parts.append("Sample counts: not recorded (no data_counts.json).")
        return "\n\n".join(parts)
    stages = [s for s, v in counts.items() if isinstance(v, dict) and "total" in v]
    for task in _tasks(files):
        classes = list(next((counts[s][task] for s in stages if task in counts[s]), {}))
        rows = [[stage, *(counts[stage].get(task, {}).get(c, 0) for c in classes),
                 counts[stage]["total"], counts[stage].get("synthetic", "-")] for stage in stages]
        parts.append(f"Samples of `{task}` per class at every stage (synthetic: made by the "
                     f"balancer):\n\n" + _table(["stage", *classes, "total", "synthetic"], rows))
        parts.append(_balance(task, counts.get("used", {}).get(task)))
    left_out = {**{f"loading: {k}": v for k, v in counts.get("skipped", {}).items()},
                **{f"detector: {k}": v for k, v in counts.get("detector", {}).items()}}
    if left_out:
        parts.append("Loading and detection outcomes: "
                     + "; ".join(f"{k}: {v}" for k, v in left_out.items()) + ".")
    return "\n\n".join(p for p in parts if p)


def _balance(task: str, used: dict[str, int] | None) -> str:
    if not used or not sum(used.values()):
        return ""
    total = sum(used.values())
    largest, smallest = max(used, key=used.get), min(used, key=used.get)
    ratio = f"{used[largest] / used[smallest]:.1f} to 1" if used[smallest] else "no samples"
    return (f"Class balance of `{task}` (usable images): largest `{largest}` {used[largest]} "
            f"({used[largest] / total:.1%}), smallest `{smallest}` {used[smallest]} "
            f"({used[smallest] / total:.1%}); largest to smallest: {ratio}.")


def _component(spec: dict[str, Any] | None) -> str:
    if not spec:
        return "-"
    params = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "type" and v not in
                       (None, {}, []))
    return f"`{spec.get('type')}`" + (f" ({params})" if params else "")


def _split(files: dict[str, Any]) -> str:
    data = files["recipe"].get("data") or {}
    counts = files["counts"] or {}
    lines = [f"- Split: {_component(data.get('split'))}.",
             f"- Balancer: {_component(data.get('balancer'))}"
             + (f", balancing `{data['balance_on']}`." if data.get("balance_on") else ".")]
    for split in ("train", "val", "test"):
        stage = counts.get(split)
        if stage:
            lines.append(f"- {split}: {stage['total']} samples, {stage.get('synthetic', 0)} "
                         "of them synthetic.")
    for split, what in (("val", "validation"), ("test", "test")):
        synthetic = (counts.get(split) or {}).get("synthetic") or 0
        if synthetic:
            lines.append(
                f"\n**The {what} set contains {synthetic} synthetic samples** (of "
                f"{counts[split]['total']}), made by the balancer (SMOTE interpolations or "
                f"repeated images) from training images. Its scores are optimistic and do not "
                f"measure how the model does on new faces"
                + ("; read the test scores for that." if split == "val" else "."))
    return "\n".join(lines)


def _estimate(e: dict[str, Any] | None) -> str:
    if not e:
        return "-"
    interval = f" [{e['low']:.3f}, {e['high']:.3f}]" if e.get("low") is not None else ""
    return f"{e['value']:.3f}{interval}"


def _shown_split(mapping: dict[str, Any] | None) -> str | None:
    mapping = mapping or {}
    return "test" if mapping.get("test") else "val" if mapping.get("val") else None


def _metrics(files: dict[str, Any]) -> str:
    from facelab.results import TOO_SMALL

    metrics, fairness = files["metrics"] or {}, files["fairness"] or {}
    if not metrics:
        return "Not recorded (no metrics.json)."
    parts = []
    for split in [s for s in ("test", "val") if s in metrics]:
        for task, m in metrics[split].items():
            task_fairness = (fairness.get(split) or {}).get(task) or {}
            overall = task_fairness.get("overall") or {}
            size = task_fairness.get("min_group_size", 0)
            accuracy = _estimate(overall.get("accuracy")) if overall else f"{m['accuracy']:.3f}"
            macro = (m.get("macro") or {}).get("f1")
            synthetic = ((files["counts"] or {}).get(split) or {}).get("synthetic") or 0
            parts.append(f"`{task}` on {split} (n={m['n']}): accuracy {accuracy}"
                         + (f", macro F1 {macro:.3f}" if macro is not None else "")
                         + (f" (**{synthetic} of these samples are synthetic: optimistic**)"
                            if synthetic else "") + ".")
            rows = []
            for cls, scores in m["per_class"].items():
                recall = (overall.get("recall") or {}).get(cls)
                fpr = (overall.get("fpr") or {}).get(cls)
                rows.append([cls, f"{scores['precision']:.3f}",
                             _marked(recall, size) if recall else f"{scores['recall']:.3f}",
                             f"{scores['f1']:.3f}", _marked(fpr, size), scores["support"]])
            parts.append(_table(["class", "precision", "recall (TPR)", "F1",
                                 "false positive rate", "support"], rows))
            if any(e and e["n"] < size for e in [*(overall.get("recall") or {}).values(),
                                                  *(overall.get("fpr") or {}).values()]):
                parts.append(f"\\* from fewer than {size} samples: {TOO_SMALL}. A rate of 0 "
                             "or 1 has an interval of width 0, which says nothing about "
                             "certainty.")
    level = _level(next((f for tasks in fairness.values() for f in tasks.values()), None))
    parts.append(f"Intervals: {level}." if level else "")
    return "\n\n".join(p for p in parts if p)


def _marked(estimate: dict[str, Any] | None, min_size: int) -> str:
    """The estimate, with ``*`` when it rests on fewer than ``min_size`` samples."""
    return _estimate(estimate) + (" \\*" if estimate and estimate["n"] < min_size else "")


def _level(task_fairness: dict[str, Any] | None) -> str:
    if not task_fairness:
        return ""
    if not task_fairness.get("resamples"):
        return "none (evaluate.bootstrap: 0)"
    return (f"{task_fairness['confidence']:.0%} percentile bootstrap intervals, "
            f"{task_fairness['resamples']} resamples of each group's samples")


def _fairness(files: dict[str, Any]) -> str:
    from facelab.results import TOO_SMALL, group_label

    fairness = files["fairness"] or {}
    split = _shown_split(fairness)
    if split is None:
        return "Not recorded (no fairness.json)."
    parts = []
    for task, f in fairness[split].items():
        size = f["min_group_size"]
        parts.append(f"`{task}` on {split}: groups over {', '.join(f['columns']) or 'nothing'} "
                     f"and their intersections (up to the recipe's evaluate.intersections "
                     f"columns). {_level(f)}. Groups with fewer than {size} samples are "
                     f"**{TOO_SMALL}**: shown, not ranked.")
        for column, reason in (f.get("left_out") or {}).items():
            parts.append(f"Column `{column}` left out: {reason}.")
        worst, gap = f.get("worst"), f.get("largest_gap")
        lines = [f"- Worst group: {group_label(worst['group'])}, accuracy "
                 f"{_estimate(worst['accuracy'])} (n={worst['n']})." if worst else
                 f"- Worst group: none ranked (no group has {size} samples or more).",
                 f"- Largest gap: {' x '.join(gap['columns'])}, {_estimate(gap['gap'])} "
                 f"({group_label(gap['best'])} vs {group_label(gap['worst'])}); an interval "
                 f"that includes 0 means the gap is not distinguishable from none." if gap else
                 "- Largest gap: none (no column has two groups large enough to judge)."]
        parts.append("\n".join(lines))
        rows, hidden = [], 0
        for group in f["groups"]:
            if len(group["group"]) > 1 and group["small"]:
                hidden += 1
                continue
            rows.append([group_label(group["group"]), group["n"], _estimate(group["accuracy"]),
                         TOO_SMALL if group["small"] else ""])
        parts.append(_table(["group", "n", "accuracy", "flag"], rows))
        if hidden:
            parts.append(f"{hidden} intersections {TOO_SMALL} are not listed.")
    parts.append("Per-group recall and false positive rates per class, and the same for every "
                 "split, are in `fairness.json` (and the MLflow table `tables/fairness.json`).")
    return "\n\n".join(parts)


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "-"


def _flips(count: dict[str, Any]) -> str:
    if not isinstance(count, dict):
        return str(count)
    rate = count.get("flip_rate")
    return f"{_percent(rate)} ({count.get('flips', '-')}/{count.get('n', '-')})"


def _sensitivity(report: dict[str, Any] | None) -> str:
    """``sensitivity.json``, whatever of its keys are present."""
    if report is None:
        return ("Not measured. `facelab sensitivity` measures how the face detector changes "
                "the predictions, and refreshes this card.")
    lines = [f"Test images: {report.get('test_images', '-')}; the run's detector: "
             f"{_component(report.get('run_detector'))}. A flip is a prediction that "
             "differs from the one made on the run's own detector's crop."]
    for detector in report.get("detectors") or []:
        lines.append(f"\n- Detector {detector.get('label', '-')} "
                     f"({_component(detector.get('detector'))}): faces found "
                     f"{detector.get('faces_found', '-')} of {detector.get('test_images', '-')}, "
                     f"compared {detector.get('compared', '-')}")
        for task, s in (detector.get("tasks") or {}).items():
            accuracy = s.get("accuracy")
            lines.append(f"  - `{task}`: accuracy "
                         f"{'-' if accuracy is None else f'{accuracy:.3f}'} (run's detector: "
                         f"{_short_float(s.get('run_detector_accuracy'))}), flips {_flips(s)}")
            if s.get("per_class"):
                lines.append("    - per class: " + ", ".join(
                    f"{k} {_flips(v)}" for k, v in s["per_class"].items()))
            for column, values in (s.get("per_group") or {}).items():
                lines.append(f"    - per {column}: " + ", ".join(
                    f"{k} {_flips(v)}" for k, v in values.items()))
    known = {"run", "run_detector", "test_images", "detectors"}
    for key, value in report.items():
        if key not in known:
            lines.append(f"- {key}: {json.dumps(value, default=str)[:500]}")
    return "\n".join(lines)


def _short_float(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _efficiency(e: dict[str, Any] | None) -> str:
    if not e:
        return "Not recorded (no efficiency.json)."
    return (f"{e['total_params']:,} parameters ({e['trainable_params']:,} trainable), "
            f"{e['ram_mb']:.2f} MB of weights (float32); {e['ms_per_image']:.2f} ms per image, "
            f"{e['fps']:.0f} images per second at batch {e['batch_size']} on {e['device']}; "
            f"training: {_training(e)}, {e['train_seconds']:.1f} s.")


def _training(e: dict[str, Any]) -> str:
    if not e.get("train_images"):  # a run before facelab counted the images read
        return f"{e['epochs']} epochs of {e['train_samples']} samples"
    return (f"{e['epochs']} epochs, {e['train_images']:,} images read from "
            f"{e['train_samples']:,} training samples")
