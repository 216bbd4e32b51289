"""Balancer ``none``: keep the training set as it is."""

from __future__ import annotations

import numpy as np

import facelab
from facelab.data import BalancePlan
from facelab.params import NoParams


class KeepAll:
    def plan(self, features: np.ndarray, labels: np.ndarray, seed: int) -> BalancePlan:
        return BalancePlan.identity(len(labels))


def build(params: NoParams, ctx) -> KeepAll:
    """No balancing: every training sample once, no synthetic samples."""
    return KeepAll()


@facelab.hookimpl
def register_balancers(register):
    register("none", build, NoParams)
