"""Balancer ``random-oversample``: imblearn's RandomOverSampler (repeat minority samples)."""

from __future__ import annotations

import numpy as np

import facelab
from facelab.data import BalancePlan
from facelab.errors import FacelabError
from facelab.plugins.balancers.smote import OverStrategy


class OversampleParams(facelab.Params):
    sampling_strategy: OverStrategy = facelab.field(
        "auto", "classes to over-sample up to the majority's size, as imblearn names them "
        "('auto' = 'not majority')")


def selection_plan(sampler, labels: np.ndarray) -> BalancePlan:
    """The rows an imblearn random sampler selects, as a plan of unchanged rows.

    A random sampler's choice depends on the labels and its random state only, so it runs on a
    one-column stand-in for the features and we keep its ``sample_indices_``.
    """
    labels = np.asarray(labels)
    try:
        sampler.fit_resample(np.zeros((len(labels), 1), np.uint8), labels)
    except ValueError as exc:
        raise FacelabError(f"data.balancer: {exc}") from None
    return BalancePlan.of_rows(np.asarray(sampler.sample_indices_, np.int64))


class RandomOversample:
    def __init__(self, params: OversampleParams):
        self.params = params

    def plan(self, features: np.ndarray, labels: np.ndarray, seed: int) -> BalancePlan:
        from imblearn.over_sampling import RandomOverSampler

        return selection_plan(RandomOverSampler(sampling_strategy=self.params.sampling_strategy,
                                                random_state=seed), labels)


def build(params: OversampleParams, ctx) -> RandomOversample:
    """Random over-sampling: repeat randomly drawn samples of the smaller classes.

    The same rows, in the same order, as ``imblearn.over_sampling.RandomOverSampler(
    sampling_strategy, random_state=seed)``: every original, then the repeats. The race paper's
    abstract names this method; its method section uses SMOTE.
    """
    return RandomOversample(params)


@facelab.hookimpl
def register_balancers(register):
    register("random-oversample", build, OversampleParams)
