"""Attention ``none``: the backbone's features go straight to the heads."""

import facelab
from facelab.params import NoParams


def build(params: NoParams) -> None:
    """No attention module (identity)."""
    return None


@facelab.hookimpl
def register_attentions(register):
    register("none", build, NoParams)
