"""Split ``race-2025``: the race paper's protocol (Rohani et al. 2025), validation after SMOTE."""

from __future__ import annotations

import numpy as np

from facelab.data import SPLIT_COLUMN, BalancePlan
from facelab.errors import FacelabError
from facelab.split import (SourceSplit, SplitParams, SplitRequest, Splits, carve, per_source,
                           predefined, size, strata)


class PaperValidationAfterBalancing:
    def __init__(self, params: SplitParams):
        self.params = params

    def split(self, request: SplitRequest) -> Splits:
        table, tasks, stratify, seed = request.table, request.tasks, request.stratify, request.seed
        fixed = int((predefined(table) != "").sum())
        if fixed:
            raise FacelabError(f"data.split.type: race-2025 reproduces the paper's own split and "
                               f"cannot honour the {fixed} rows with a predefined split (column "
                               f"{SPLIT_COLUMN!r}); use type: stratified")

        def split_source(rows: np.ndarray, share: SourceSplit, where: str) -> dict[str, np.ndarray]:
            pool, test = carve(rows, strata(table, rows, stratify, tasks),
                               size(share.test, len(rows), f"{where}.test"), seed)
            return {"train": pool, "test": test}  # validation is carved after balancing

        rows = per_source(request, self.params, split_source)
        balanced = request.balance(rows["train"])
        labels = table.frame[request.balance_on].to_numpy()[balanced.base]
        keep, val = carve(np.arange(len(balanced)), labels,
                          size(self.params.val, len(balanced), "data.split.val"), seed)
        return Splits({"train": balanced.take(keep), "val": balanced.take(val),
                       "test": BalancePlan.of_rows(rows["test"])}, rows["train"])


def build(params: SplitParams, ctx) -> PaperValidationAfterBalancing:
    """The race paper's split: test first, then balance, then validation from the balanced set.

    Rohani et al. 2025 (Table 1, Fig. 5) split off a stratified test set, balanced the rest with
    SMOTE, and carved validation out of the **balanced** set, so validation contains synthetic
    samples (about 806 per class on UTKFace; 318 Indian without balancing). This reproduces
    their reported counts exactly; use it only to reproduce the paper, since its validation
    scores are optimistic. ``val`` is a share of the balanced set; ``by_source`` overrides only
    ``test`` and ``train``. Data with predefined splits (a ``split`` column) is an error.
    """
    return PaperValidationAfterBalancing(params)
