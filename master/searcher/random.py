"""``random``: ``max_trials`` trials with independently sampled hyperparameters, at most
``max_concurrent_trials`` at a time (0: all at once), each trained to ``max_length``, validated
once and closed. A closed or early-exited trial frees its slot for the next one."""

from __future__ import annotations

from typing import Any

from harness.experiment_config import ExperimentConfig, RandomSearcher
from master.searcher.base import FixedLengthSearch, SearchContext
from master.searcher.hparams import sample_hparams


class RandomSearch(FixedLengthSearch):
    def __init__(self, config: ExperimentConfig, ctx: SearchContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config.searcher, RandomSearcher)
        self._searcher = config.searcher

    @property
    def max_trials(self) -> int:
        return self._searcher.max_trials

    @property
    def max_concurrent(self) -> int:
        return self._searcher.max_concurrent_trials

    def new_hparams(self) -> dict[str, Any]:
        return sample_hparams(self.space, self.ctx.rng)
