"""``grid``: one trial per point of the hyperparameter grid (:func:`grid_points`), in grid
order, at most ``max_concurrent_trials`` at a time, each trained to ``max_length``, validated
once and closed. The grid is recomputed from the config on restore; only how many points were
handed out is state (the trial table's size)."""

from __future__ import annotations

import copy
from typing import Any

from harness.experiment_config import ExperimentConfig, GridSearcher
from master.searcher.base import FixedLengthSearch, SearchContext
from master.searcher.hparams import grid_points


class GridSearch(FixedLengthSearch):
    def __init__(self, config: ExperimentConfig, ctx: SearchContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config.searcher, GridSearcher)
        self._searcher = config.searcher
        self.points = grid_points(self.space)

    @property
    def max_trials(self) -> int:
        return len(self.points)

    @property
    def max_concurrent(self) -> int:
        return self._searcher.max_concurrent_trials

    def new_hparams(self) -> dict[str, Any]:
        return copy.deepcopy(self.points[len(self.trials)])
