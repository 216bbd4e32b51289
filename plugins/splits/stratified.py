"""Split ``stratified``: per-source stratified test and validation, then balance the rest."""

from __future__ import annotations

import numpy as np

import facelab
from facelab.data import BalancePlan
from facelab.split import SourceSplit, SplitParams, SplitRequest, Splits, carve, per_source, size, strata


class Stratified:
    def __init__(self, params: SplitParams):
        self.params = params

    def split(self, request: SplitRequest) -> Splits:
        table, tasks, stratify, seed = request.table, request.tasks, request.stratify, request.seed

        def split_source(rows: np.ndarray, share: SourceSplit, where: str) -> dict[str, np.ndarray]:
            pool, test = carve(rows, strata(table, rows, stratify, tasks),
                               size(share.test, len(rows), f"{where}.test"), seed)
            train, val = carve(pool, strata(table, pool, stratify, tasks),
                               size(share.val, len(pool), f"{where}.val"), seed)
            if share.train is not None and share.train < len(train):
                _, train = carve(train, strata(table, train, stratify, tasks), share.train, seed)
            return {"train": train, "val": val, "test": test}

        rows = per_source(request, self.params, split_source)
        return Splits({"train": request.balance(rows["train"]),
                       "val": BalancePlan.of_rows(rows["val"]),
                       "test": BalancePlan.of_rows(rows["test"])}, rows["train"])


def build(params: SplitParams, ctx) -> Stratified:
    """Stratified train/validation/test split; only the training rows are balanced.

    Per source (``data.datasets`` key), test is split off first, then validation from what
    remains, both stratified on ``stratify`` (default: the first head's task; a source that does
    not label it is stratified on the first task it does label). Only the remaining training
    rows go to the balancer, so validation and test never contain synthetic or repeated samples.
    ``test`` and ``val`` are fractions (0-1) or absolute counts; ``train`` caps the training
    rows; ``by_source`` overrides them per source.
    """
    return Stratified(params)


@facelab.hookimpl
def register_splits(register):
    register("stratified", build, SplitParams)
