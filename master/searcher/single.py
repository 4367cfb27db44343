"""``single``: one trial with sampled hyperparameters (constants usually), trained to
``max_length``, validated, closed; then the search shuts down."""

from __future__ import annotations

from typing import Any

from master.searcher.base import FixedLengthSearch
from master.searcher.hparams import sample_hparams


class SingleSearch(FixedLengthSearch):
    @property
    def max_trials(self) -> int:
        return 1

    @property
    def max_concurrent(self) -> int:
        return 1

    def new_hparams(self) -> dict[str, Any]:
        return sample_hparams(self.space, self.ctx.rng)
