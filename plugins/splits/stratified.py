"""Split ``stratified``: per-source stratified test and validation, then balance the rest."""

from __future__ import annotations

import numpy as np

import facelab
from facelab.data import BalancePlan
from facelab.split import (SourceSplit, SplitParams, SplitRequest, Splits, carve, per_source,
                           predefined, size, strata)


class Stratified:
    def __init__(self, params: SplitParams):
        self.params = params

    def split(self, request: SplitRequest) -> Splits:
        table, tasks, stratify, seed = request.table, request.tasks, request.stratify, request.seed
        given = predefined(table)

        def split_source(rows: np.ndarray, share: SourceSplit, where: str) -> dict[str, np.ndarray]:
            fixed = given[rows]
            free = rows[fixed == ""]  # rows without a predefined split: carved as usual
            if (fixed == "test").any():  # the dataset's test set: nothing else is carved for test
                pool, test = free, rows[fixed == "test"]
            else:
                pool, test = carve(free, strata(table, free, stratify, tasks),
                                   size(share.test, len(free), f"{where}.test"), seed)
            pool = np.sort(np.concatenate([rows[fixed == "train"], pool]))
            if (fixed == "val").any():
                train, val = pool, rows[fixed == "val"]
            else:
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

    Predefined splits (a dataset's ``split`` column, e.g. the ``csv`` dataset's ``tables[].split``
    or ``split_column``) are honoured per source: rows predefined as test are that source's test
    set (no test is carved from its other rows) and rows predefined as val its validation set;
    a source without predefined validation rows has validation carved, stratified, from its
    predefined training rows together with what remains of its rows without a predefined split.
    Rows without one are carved as usual. ``test`` is then a share of those rows only.
    """
    return Stratified(params)


@facelab.hookimpl
def register_splits(register):
    register("stratified", build, SplitParams)
