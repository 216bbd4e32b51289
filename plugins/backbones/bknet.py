"""Backbones ``bknet`` and ``mbknet``: the multi-task paper's shared CNN (Rohani et al. 2023).

Four conv groups, 32,32 | 64,64 | 128,128 | 256,256,256 filters (3x3, stride 1, same padding,
ReLU), each followed by a 2x2 max-pool, then flatten (sections 3.2, 4.4 and Table 3). ``mbknet``
also max-pools the first group's output down to the last group's spatial size, flattens it and
concatenates it with the last group's flattened output ("MTL-MBKNet", config C).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import facelab
from facelab.errors import FacelabError

if TYPE_CHECKING:
    import keras

#: Filters per conv group. Table 3's parameter counts reproduce exactly with these widths.
GROUPS = ((32, 32), (64, 64), (128, 128), (256, 256, 256))


class BknetParams(facelab.Params):
    init: Literal["gaussian", "glorot"] = facelab.field(
        "glorot", "kernel init: glorot (Keras's default) or gaussian (the paper's N(0, variance 0.01))")
    batch_norm: bool = facelab.field(
        False, "batch normalisation after each conv (the paper has none in the conv groups)")
    filters: list[list[int]] = facelab.field(
        [list(g) for g in GROUPS], "filters of each conv layer, one list per group", min_length=1)


def kernel_initializer(init: str, seed: int | None = None):
    """The paper's Gaussian (mean 0, variance 0.01, so stddev 0.1) or Keras's Glorot uniform."""
    import keras

    if init == "gaussian":
        return keras.initializers.RandomNormal(mean=0.0, stddev=0.1, seed=seed)
    return keras.initializers.GlorotUniform(seed=seed)


def _groups(params: BknetParams, input_shape):
    import keras

    if min(input_shape[:2]) < 2 ** len(params.filters):
        raise FacelabError(
            f"model.backbone: input {tuple(input_shape)} is too small for {len(params.filters)} "
            f"2x2 max-pools; expected sides of at least {2 ** len(params.filters)} pixels")
    inputs = keras.Input(tuple(input_shape), name="image")
    # Section 3.1 normalises the grey intensities "to a specific range"; 0-255 -> 0-1.
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    outputs = []
    for g, group in enumerate(params.filters, start=1):
        if not group or min(group) < 1:
            raise FacelabError(f"model.backbone.filters.{g - 1}: got {group}; expected a non-empty "
                               "list of positive filter counts")
        for c, filters in enumerate(group, start=1):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=not params.batch_norm,
                kernel_initializer=kernel_initializer(params.init), name=f"group{g}_conv{c}")(x)
            if params.batch_norm:
                x = keras.layers.BatchNormalization(name=f"group{g}_bn{c}")(x)
            x = keras.layers.ReLU(name=f"group{g}_relu{c}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"group{g}_pool")(x)
        outputs.append(x)
    return inputs, outputs


def pool_to(x, size: tuple[int, int]):
    """Max-pool a 4-D map down to ``size`` (H, W) with a k x k window and stride k, k = in // out.

    On 48x48 inputs this is 24x24 -> 3x3 with k = 8, the same as 16x16 on the 48x48 conv map.
    Sizes that do not divide evenly leave an extra row or column, cropped at the bottom/right.
    (keras.layers.AdaptiveMaxPooling2D would do it, but in Keras 3.15 / TF 2.21 it kills the
    process with a floating point exception when an output side is 1.)
    """
    import keras

    k = (x.shape[1] // size[0], x.shape[2] // size[1])
    x = keras.layers.MaxPooling2D(k, strides=k, name="group1_to_last")(x)
    extra = (x.shape[1] - size[0], x.shape[2] - size[1])
    if any(extra):
        x = keras.layers.Cropping2D(((0, extra[0]), (0, extra[1])), name="group1_crop")(x)
    return x


def build_bknet(params: BknetParams, input_shape: tuple[int, int, int]) -> keras.Model:
    """BKNet without its FC layers: four conv groups with 2x2 max-pools, flattened (config A/B).

    Inputs in 0-255 are scaled to 0-1 inside. On 48x48x1 the output is 3x3x256 = 2304 features.
    ``init: gaussian`` is the paper's N(0, 0.01) initialisation (section 4.3), which diverges
    without BN (see docs/reproduce-multitask-2023.md), so Glorot is the default. ``batch_norm``
    adds BN after each conv, which the paper does not describe (its BN is in the FC branches).
    """
    import keras

    inputs, outputs = _groups(params, input_shape)
    features = keras.layers.Flatten(name="flatten")(outputs[-1])
    return keras.Model(inputs, features, name="bknet")


def build_mbknet(params: BknetParams, input_shape: tuple[int, int, int]) -> keras.Model:
    """MBKNet: BKNet plus the first group's output, max-pooled to the last group's size (config C).

    The first group's (pooled) output is max-pooled down to the last group's spatial size
    (24x24x32 -> 3x3x32 on 48x48 inputs), flattened, and concatenated with the last group's
    flattened output (section 3.2): 288 + 2304 = 2592 features on 48x48x1.
    """
    import keras

    inputs, outputs = _groups(params, input_shape)
    first, last = outputs[0], outputs[-1]
    pooled = pool_to(first, tuple(last.shape[1:3]))
    features = keras.layers.Concatenate(name="concat")([
        keras.layers.Flatten(name="flatten_first")(pooled),
        keras.layers.Flatten(name="flatten")(last)])
    return keras.Model(inputs, features, name="mbknet")


@facelab.hookimpl
def register_backbones(register):
    register("bknet", build_bknet, BknetParams)
    register("mbknet", build_mbknet, BknetParams)
