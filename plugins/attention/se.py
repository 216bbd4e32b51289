"""Attention ``se``: squeeze-and-excitation (Hu et al. 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import facelab

if TYPE_CHECKING:
    from facelab.plugins.attention.se_layers import SqueezeExcite

#: Modules defining this plugin's Keras classes: import them before loading a saved model.
KERAS_MODULES = ("facelab.plugins.attention.se_layers",)


class SeParams(facelab.Params):
    reduction: int = facelab.field(16, "reduction ratio r (hidden width = C / r)", ge=1)
    use_bias: bool = facelab.field(True, "biases in the two dense layers")


def build(params: SeParams) -> SqueezeExcite:
    """Squeeze-and-excitation: per-channel gates from the globally averaged features."""
    from facelab.plugins.attention.se_layers import SqueezeExcite

    return SqueezeExcite(params.reduction, params.use_bias, name="se")


@facelab.hookimpl
def register_attentions(register):
    register("se", build, SeParams)
