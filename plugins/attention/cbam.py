"""Attention ``cbam``: the Convolutional Block Attention Module (Woo et al. 2018)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import facelab

if TYPE_CHECKING:
    from facelab.plugins.attention.cbam_layers import CBAM

#: Modules defining this plugin's Keras classes: import them before loading a saved model.
KERAS_MODULES = ("facelab.plugins.attention.cbam_layers",)


class CbamParams(facelab.Params):
    reduction: int = facelab.field(8, "channel MLP reduction ratio r (hidden width = C / r)", ge=1)
    kernel_size: int = facelab.field(7, "side of the spatial attention convolution", ge=1)
    use_bias: bool = facelab.field(
        False, "biases in the MLP and the conv (the race paper's counts have none)")


def build(params: CbamParams) -> CBAM:
    """CBAM: channel attention (a shared MLP on avg- and max-pooled features), then spatial (7x7).

    On EfficientNetB3's 1536-channel map with reduction 8 and no biases it adds 589,922
    parameters: the race paper's model 2 (11,379,605 in all).
    """
    from facelab.plugins.attention.cbam_layers import CBAM

    return CBAM(params.reduction, params.kernel_size, params.use_bias, name="cbam")


@facelab.hookimpl
def register_attentions(register):
    register("cbam", build, CbamParams)
