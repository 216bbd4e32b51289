"""One tiny end-to-end run per race-paper recipe on CPU, on synthetic UTKFace-layout faces."""

from __future__ import annotations

import json

import pytest

from conftest import RECIPES
from facelab.cli import cli

TINY = ["data.dataset={type: synthetic, count: 100, size: 48}", "model.backbone.weights=null",
        # B0 traces several times faster than B3 on CPU; B3 itself is checked by Table 2's counts
        "model.backbone.variant=b0",
        "train.epochs=1", "train.batch_size=16", "evaluate.batch_size=16",
        "evaluate.timing_batches=1", "evaluate.examples=4"]
DETECTORS = {
    "base": "data.detector={type: none, size: [32, 32]}",
    # the real MTCNN path: cartoon faces are mostly not found and are kept whole (no_face: keep)
    "bd": "data.detector={size: [32, 32], batch_size: 16}",
    "bd-am": "data.detector={type: none, size: [32, 32]}",
}


@pytest.mark.parametrize("recipe", ["base", "bd", "bd-am"])
def test_tiny_run(recipe, workdir, cli_runner, shared_cache, monkeypatch):
    monkeypatch.setenv("UTKFACE_DIR", str(workdir / "unused"))
    overrides = [*TINY, DETECTORS[recipe], f"data.cache_dir={shared_cache}"]
    args = ["run", str(RECIPES / "race-2025" / f"{recipe}.yaml")]
    for override in overrides:
        args += ["--set", override]
    result = cli_runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    output = next((workdir / "runs").glob("race-2025-*"))
    counts = json.loads((output / "data_counts.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    efficiency = json.loads((output / "efficiency.json").read_text())
    balanced = recipe != "base"
    assert (counts["train"]["synthetic"] + counts["val"]["synthetic"] > 0) == balanced
    assert counts["test"]["synthetic"] == 0
    assert metrics["test"]["race"]["n"] == counts["test"]["total"]
    assert set(metrics) == {"val", "test"}
    assert efficiency["device"].startswith(("CPU", "GPU")) and efficiency["fps"] > 0
    if recipe == "bd":
        assert sum(counts["detector"].values()) == counts["found"]["total"]
    for figure in ("curves", "confusion_val_race", "confusion_test_race_normalized",
                   "per_class_test_race"):
        assert (output / "figures" / f"{figure}.png").stat().st_size > 1000
    assert list((output / "figures").glob("examples_race_*.png"))
