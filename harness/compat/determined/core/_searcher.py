"""``core_context.searcher``: Determined's searcher operations over ``harness.core.searcher``.

Lengths come from the master's searcher, as Flotilla's do (several growing lengths for
adaptive searchers). Determined's ``op.report_progress(length)`` takes training done in the
unit of ``op.length``; it is sent as the fraction of ``searcher.max_length`` it is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any

from harness.core.distributed import DistributedContext as _HarnessDistributed
from harness.core.searcher import SearcherContext as _HarnessSearcher
from harness.core.searcher import SearcherOperation as _HarnessOperation
from harness.core.train import TrainContext as _HarnessTrain

from .._unsupported import missing_attribute, unsupported


class Unit(enum.Enum):
    EPOCHS = "EPOCHS"
    RECORDS = "RECORDS"
    BATCHES = "BATCHES"


class SearcherMode(enum.Enum):
    WorkersAskChief = "WORKERS_ASK_CHIEF"
    ChiefOnly = "CHEIF_ONLY"  # Determined's spelling


class SearcherOperation:
    """Train until :attr:`length`, validate, then :meth:`report_completed` (chief only)."""

    def __init__(
        self,
        inner: _HarnessOperation,
        searcher: _HarnessSearcher,
        train: _HarnessTrain,
        chief: bool,
    ) -> None:
        self._inner = inner
        self._searcher = searcher
        self._train = train
        self._is_chief = chief

    @property
    def length(self) -> int:
        return self._inner.length

    def report_progress(self, length: float) -> None:
        """Training done so far, in the unit of :attr:`length`."""
        if not self._is_chief:
            raise RuntimeError("you must only call op.report_progress() from the chief worker")
        self._train.report_progress(self._searcher.progress(float(length)))

    def report_completed(self, searcher_metric: Any) -> None:
        if not self._is_chief:
            raise RuntimeError("you must only call op.report_completed() from the chief worker")
        if self._inner.completed:
            raise RuntimeError("you may only call op.report_completed() once")
        self._inner.report_completed(searcher_metric)

    __getattr__ = missing_attribute("determined.core.SearcherOperation")


class SearcherContext:
    def __init__(
        self, inner: _HarnessSearcher, train: _HarnessTrain, dist: _HarnessDistributed
    ) -> None:
        self._inner = inner
        self._train = train
        self._dist = dist
        self.used = False  # whether the script asked for operations (else see Context.__exit__)

    def operations(
        self, searcher_mode: SearcherMode = SearcherMode.WorkersAskChief, auto_ack: bool = True
    ) -> Iterator[SearcherOperation]:
        """The searcher's operations for this trial; every worker iterates them together."""
        self.used = True
        if SearcherMode(searcher_mode) is SearcherMode.ChiefOnly and self._dist.size > 1:
            unsupported(
                "searcher.operations(searcher_mode=ChiefOnly) with several workers",
                "iterate the operations on every worker (the default, WorkersAskChief)",
            )
        for inner in self._inner.operations():
            yield SearcherOperation(inner, self._inner, self._train, self._dist.is_chief)
            if not self._dist.is_chief and not inner.completed:
                inner.report_completed(0.0)  # on workers this only marks it done

    def acknowledge_out_of_ops(self) -> None:
        """Nothing to do: the master knows the trial is done when it exits."""

    def get_configured_units(self) -> Unit | None:
        return Unit[self._inner.unit.upper()] if self._inner.unit else None

    __getattr__ = missing_attribute("determined.core.SearcherContext")
