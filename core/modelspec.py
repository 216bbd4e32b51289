"""What a trained model needs to be used elsewhere: its tasks and class names, its input, and
the detector that crops faces for it.

The runner writes it beside every run's outputs (``model_spec.json``); tracking and export
plugins keep it with the model, and ``predict`` rebuilds the exact crop from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The file name of a model spec, in a run's output folder and beside exported models.
FILE = "model_spec.json"


@dataclass(frozen=True)
class ModelSpec:
    """Tasks (name -> class names, in output order), the input shape (H, W, C) of float32
    images in 0-255, and the detector component (``{type: ..., params}``) that crops them."""

    tasks: dict[str, tuple[str, ...]]
    input_shape: tuple[int, int, int]
    detector: dict[str, Any]
    recipe: str
    facelab_version: str

    def to_json(self) -> dict[str, Any]:
        return {"tasks": {t: list(c) for t, c in self.tasks.items()},
                "input_shape": list(self.input_shape), "detector": dict(self.detector),
                "recipe": self.recipe, "facelab_version": self.facelab_version}

    @staticmethod
    def from_json(value: dict[str, Any]) -> ModelSpec:
        return ModelSpec({t: tuple(c) for t, c in value["tasks"].items()},
                         tuple(value["input_shape"]), dict(value["detector"]), value["recipe"],
                         value["facelab_version"])

    @staticmethod
    def read(path: Path) -> ModelSpec:
        return ModelSpec.from_json(json.loads(Path(path).read_text()))


def model_spec(recipe, tasks: dict, input_shape: tuple[int, ...]) -> ModelSpec:
    """The spec of a model trained by ``recipe`` on ``tasks`` (name -> Task)."""
    from facelab import __version__

    return ModelSpec({name: tuple(task.classes) for name, task in tasks.items()},
                     tuple(int(v) for v in input_shape), recipe.detector.as_dict(), recipe.name,
                     __version__)
