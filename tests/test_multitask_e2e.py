"""Config C end to end on CPU: generated GENKI-4K + IMDB-WIKI in the real layouts, every head learns.

The settings a tiny CPU run needs (docs/reproduce-multitask-2023.md, "CPU smoke run"): whole
images instead of MTCNN (the generated faces are drawings), small test splits, Adam at 1e-3 with
lambda = 1e-4 for a few epochs instead of the paper's 500 epochs of SGD with lambda = 0.01, and no
augmentation (tested on its own in test_multitask_model.py) so that few steps suffice.
"""

from __future__ import annotations

from pathlib import Path

from facelab.recipe import load_recipe
from facelab.runner import run_recipe

from fixtures_multitask import write_genki4k, write_imdb_wiki

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "multitask-2023" / "config-c.yaml"
#: the docs' CPU smoke-run overrides
SMOKE = [
    "data.detector={type: none, size: [48, 48], colour: grey}",
    "train.optimizer={type: adam, learning_rate: 0.001}",
    "train.schedule=null",
    "train.loss.l2=0.0001",
    "train.batch_size=32",
    "data.augment=[]",
    "evaluate.figures=false",
    "tracking.enabled=false",
]


def test_config_c_learns_every_task(workdir, monkeypatch):
    genki = write_genki4k(workdir / "GENKI-4K", count=400, seed=1)
    imdb = write_imdb_wiki(workdir, "imdb", count=600, seed=2, invalid=5)
    monkeypatch.setenv("GENKI4K_DIR", str(genki))
    monkeypatch.setenv("IMDB_WIKI_DIR", str(imdb.folder))
    recipe = load_recipe(RECIPE, [*SMOKE, "train.epochs=8",
                                  f"data.cache_dir={workdir / 'cache'}",
                                  "data.split.by_source.genki4k.test=100",
                                  "data.split.by_source.imdb_wiki.test=150"])
    result = run_recipe(recipe)
    counts = result.counts
    assert counts.stages["test"].sources == {"genki4k": 100, "imdb_wiki": 150}
    assert counts.stages["train"].sources == {"genki4k": 300, "imdb_wiki": 450}
    assert sum(counts.skipped.values()) == 25  # 5 reasons x 5 rows, in the IMDB source
    test = result.metrics["test"]
    assert {task: m.n for task, m in test.items()} == {"smile": 100, "age": 150, "gender": 150}
    accuracy = {task: m.accuracy for task, m in test.items()}
    # chance: majority class ~0.54 (smile), 0.5 (gender), 1/6 (age, groups spread evenly)
    assert accuracy["smile"] > 0.75 and accuracy["gender"] > 0.65 and accuracy["age"] > 0.35, \
        accuracy
    assert result.efficiency.total_params == 3_953_130
