"""Balancer ``smote``: imblearn's SMOTE, planned lazily so images are never held as float copies."""

from __future__ import annotations

from typing import Literal

import numpy as np

import facelab
from facelab.data import BalancePlan
from facelab.errors import FacelabError

#: imblearn's named over-sampling strategies (which classes get synthetic samples).
OverStrategy = Literal["auto", "minority", "not minority", "not majority", "all"]
#: Rows copied to float32 at a time when a class is prepared for the neighbour search.
_CHUNK = 256


class SmoteParams(facelab.Params):
    k_neighbors: int = facelab.field(5, "neighbours per sample to interpolate towards", ge=1)
    sampling_strategy: OverStrategy = facelab.field(
        "auto", "classes to over-sample up to the majority's size, as imblearn names them "
        "('auto' = 'not majority')")


def over_sampling_targets(strategy: str, labels: np.ndarray, where: str) -> dict:
    """imblearn's ``{class: samples to add}``, in its (sorted) order; errors become FacelabError."""
    from imblearn.utils import check_sampling_strategy

    try:
        return check_sampling_strategy(strategy, labels, "over-sampling")
    except ValueError as exc:
        raise FacelabError(f"{where}: {exc}") from None


def as_float(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``features[rows]`` flattened to 2-D float, filled in chunks (no whole-array float copy).

    Float features keep their dtype (what imblearn would compute on); others become float32,
    so uint8 images give exactly imblearn's result on ``features.astype(np.float32)``.
    """
    dtype = features.dtype if features.dtype in (np.float32, np.float64) else np.float32
    flat = features.reshape(len(features), -1)
    out = np.empty((len(rows), flat.shape[1]), dtype)
    for start in range(0, len(rows), _CHUNK):
        out[start:start + _CHUNK] = flat[rows[start:start + _CHUNK]]
    return out


class Smote:
    """SMOTE as a plan: the same neighbours, base rows and steps as ``imblearn`` SMOTE."""

    def __init__(self, params: SmoteParams):
        self.params = params

    def plan(self, features: np.ndarray, labels: np.ndarray, seed: int) -> BalancePlan:
        from imblearn.utils import check_neighbors_object
        from sklearn.utils import check_random_state

        k = self.params.k_neighbors
        labels = np.asarray(labels)
        n = len(labels)
        targets = over_sampling_targets(self.params.sampling_strategy, labels,
                                        "data.balancer.sampling_strategy")
        original = np.arange(n, dtype=np.int64)
        bases, neighbours, steps = [original], [original.copy()], [np.zeros(n)]
        for label, count in targets.items():
            if count == 0:
                continue
            rows = np.flatnonzero(labels == label)
            if len(rows) <= k:
                raise FacelabError(
                    f"data.balancer.k_neighbors: label {label} has {len(rows)} training samples, "
                    f"but SMOTE needs more than k_neighbors ({k}); lower k_neighbors or use "
                    "random-oversample")
            # imblearn's own neighbour search on the class alone, so neighbour order and ties are
            # exactly imblearn's; only this class is ever float (imblearn needs all of X as float).
            nn = check_neighbors_object("k_neighbors", k, additional_neighbor=1)
            x_class = as_float(features, rows)
            nn.fit(x_class)
            nns = nn.kneighbors(x_class, return_distance=False)[:, 1:]
            del nn, x_class
            # imblearn's BaseSMOTE._make_samples draws these, with a fresh random state per class;
            # we keep the indices and steps instead of interpolating every sample up front.
            random_state = check_random_state(seed)
            samples = random_state.randint(low=0, high=nns.size, size=count)
            step = random_state.uniform(size=count)
            pick_rows, pick_cols = np.floor_divide(samples, k), np.mod(samples, k)
            bases.append(rows[pick_rows])
            neighbours.append(rows[nns[pick_rows, pick_cols]])
            steps.append(step)
        return BalancePlan(np.concatenate(bases), np.concatenate(neighbours),
                           np.concatenate(steps))


def build(params: SmoteParams, ctx) -> Smote:
    """SMOTE (Chawla et al. 2002): synthetic samples between a sample and one of its k neighbours.

    Reproduces ``imblearn.over_sampling.SMOTE(k_neighbors, sampling_strategy,
    random_state=seed).fit_resample`` on the flattened features (uint8 images as float32): the
    originals first, then each over-sampled class's synthetic rows in imblearn's order. Only a
    plan (base, neighbour, step) is kept, so memory stays near the uint8 images: only the class
    being searched is held as float32 (3.6k images of 224x224x3: 2.2 GB).
    """
    return Smote(params)


@facelab.hookimpl
def register_balancers(register):
    register("smote", build, SmoteParams)
