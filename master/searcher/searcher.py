"""The ``Searcher`` the master drives: one per experiment, pure and restorable.

It picks the method from ``searcher.name``, owns the seeded RNG and request-id counter, and
wraps the method's state in a versioned JSON-able snapshot. The master stores
:meth:`Searcher.snapshot` after every event and, after a restart, continues with
:meth:`Searcher.restore` — which yields exactly the operations an uninterrupted searcher would
have, given the same events. No I/O, no clock: the seed is the only source of randomness.
"""

from __future__ import annotations

from typing import Any

from harness.experiment_config import ExperimentConfig
from master.searcher.asha import AdaptiveAshaSearch
from master.searcher.base import SearchContext, SearchMethod
from master.searcher.grid import GridSearch
from master.searcher.operations import Operation
from master.searcher.random import RandomSearch
from master.searcher.single import SingleSearch

SNAPSHOT_VERSION = 1

METHODS: dict[str, type[SearchMethod]] = {
    "single": SingleSearch,
    "random": RandomSearch,
    "grid": GridSearch,
    "adaptive_asha": AdaptiveAshaSearch,
}


class Searcher:
    """Hyperparameter search for one experiment (``docs/design/experiments.md``).

    ``seed``: the experiment id, unless the searcher config sets ``seed`` — then that wins.
    Raises ``ValueError`` naming the field for a config the method cannot run (no
    ``max_length`` for single/random/grid, a grid hyperparameter without ``count``)."""

    def __init__(self, config: ExperimentConfig, seed: int) -> None:
        configured = getattr(config.searcher, "seed", None)
        self.seed: int = configured if configured is not None else seed
        self._ctx = SearchContext(self.seed)
        self._method = METHODS[config.searcher.name](config, self._ctx)
        self._started = False

    @property
    def name(self) -> str:
        return self._method.config.searcher.name

    @property
    def finished(self) -> bool:
        """Whether ``Shutdown`` has been returned."""
        return self._method.shut_down

    def initial_operations(self) -> list[Operation]:
        """The first trials (``Create`` then its ``ValidateAfter``, per trial). Call once."""
        if self._started:
            raise RuntimeError("initial_operations was already called for this searcher")
        self._started = True
        return self._method.initial_operations()

    def on_trial_created(self, request_id: str) -> list[Operation]:
        return self._method.on_trial_created(request_id)

    def on_validation_completed(
        self, request_id: str, metric: float, length: int
    ) -> list[Operation]:
        """The trial validated after ``length`` units with searcher metric ``metric`` (as
        reported; ``smaller_is_better`` is applied here)."""
        return self._method.on_validation_completed(request_id, metric, length)

    def on_trial_exited_early(self, request_id: str, reason: str) -> list[Operation]:
        """Crashed for good, invalid hyperparameters or stopped by a user: the trial is done
        and, for adaptive_asha, counts as the worst result at its rung."""
        return self._method.on_trial_exited_early(request_id, reason)

    def on_trial_closed(self, request_id: str) -> list[Operation]:
        """The trial's process ended (normally after ``Close``); its slot is free."""
        return self._method.on_trial_closed(request_id)

    def on_trial_progress(self, request_id: str, fraction: float) -> None:
        """The trial reported training progress: ``fraction`` of ``max_length`` (what the
        harness posts to /trials/{id}/progress), counted in :meth:`progress` at once."""
        self._method.on_trial_progress(request_id, fraction * self._method.max_length)

    def progress(self) -> float:
        """Completed units over the search's planned units, 0..1 (see SearchMethod)."""
        return self._method.progress()

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "searcher": self.name,
            "started": self._started,
            "context": self._ctx.snapshot(),
            "state": self._method.snapshot(),
        }

    @classmethod
    def restore(cls, config: ExperimentConfig, snapshot: dict[str, Any]) -> Searcher:
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"searcher snapshot: unknown version {snapshot.get('version')!r}")
        if snapshot.get("searcher") != config.searcher.name:
            raise ValueError(
                f"searcher snapshot is for {snapshot.get('searcher')!r}, "
                f"the config says {config.searcher.name!r}"
            )
        searcher = cls(config, int(snapshot["context"]["seed"]))
        searcher._ctx.restore(snapshot["context"])
        searcher.seed = searcher._ctx.seed
        searcher._method.restore(snapshot["state"])
        searcher._started = bool(snapshot["started"])
        return searcher
