"""Balancer ``random-undersample``: imblearn's RandomUnderSampler (drop majority samples)."""

from __future__ import annotations

from typing import Literal

import numpy as np

import facelab
from facelab.data import BalancePlan
from facelab.plugins.balancers.oversample import selection_plan


class UndersampleParams(facelab.Params):
    sampling_strategy: Literal["auto", "majority", "not minority", "not majority", "all"] = \
        facelab.field("auto", "classes to under-sample down to the minority's size, as imblearn "
                      "names them ('auto' = 'not minority')")
    replacement: bool = facelab.field(False, "draw the kept samples with replacement")


class RandomUndersample:
    def __init__(self, params: UndersampleParams):
        self.params = params

    def plan(self, features: np.ndarray, labels: np.ndarray, seed: int) -> BalancePlan:
        from imblearn.under_sampling import RandomUnderSampler

        return selection_plan(RandomUnderSampler(sampling_strategy=self.params.sampling_strategy,
                                                 replacement=self.params.replacement,
                                                 random_state=seed), labels)


def build(params: UndersampleParams, ctx) -> RandomUndersample:
    """Random under-sampling: keep a random subset of the larger classes.

    The same rows, in the same order, as ``imblearn.under_sampling.RandomUnderSampler(
    sampling_strategy, replacement, random_state=seed)``.
    """
    return RandomUndersample(params)


@facelab.hookimpl
def register_balancers(register):
    register("random-undersample", build, UndersampleParams)
