"""What the hyperparameter searcher wants from this trial (``core.searcher``).

The searcher speaks in ``ValidateAfter(length)`` operations: train until ``length`` (cumulative,
in the unit of the config's ``searcher.max_length``), validate, report the searcher metric.
Adaptive searchers (ASHA) hand out several growing lengths and may stop a trial early; the
simple ones hand out one. :meth:`SearcherContext.operations` yields them until the master says
the searcher is done with this trial.

When the master has nothing yet (ASHA waiting on other trials) the chief polls again. If the
trial is preempted meanwhile the iteration ends, so check ``core.preempt.should_preempt()``
after the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

from harness.core.api import TrialAPI
from harness.core.distributed import DistributedContext
from harness.core.metrics import to_number
from harness.core.preempt import PreemptContext
from harness.core.train import TrainContext

# Seconds between polls while the master has no operation for this trial yet (growing to max).
POLL_MIN_SECONDS = 0.5
POLL_MAX_SECONDS = 10.0


class SearcherOperation:
    """Train until :attr:`length`, validate, then :meth:`report_completed`."""

    def __init__(self, context: SearcherContext, length: int, is_chief: bool) -> None:
        self._context = context
        self._length = length
        self._is_chief = is_chief
        self._completed = False

    @property
    def length(self) -> int:
        """Cumulative training to reach, in the unit of ``searcher.max_length``."""
        return self._length

    @property
    def completed(self) -> bool:
        return self._completed

    def report_progress(self, fraction: float) -> None:
        """How far the whole trial is, 0..1 (e.g. units trained / ``searcher.max_length``)."""
        self._context._train.report_progress(fraction)

    def report_completed(self, searcher_metric: Any) -> None:
        """Report the searcher's metric (``searcher.metric`` of the validation at
        :attr:`length`); the searcher decides what comes next. On other workers than the chief
        it only marks the operation done."""
        if self._completed:
            raise RuntimeError(f"operation ValidateAfter({self._length}) was completed already")
        metric = to_number(searcher_metric, "searcher metric")
        if self._is_chief:
            self._context._api.complete_operation(self._length, metric)
        self._completed = True


class SearcherContext:
    def __init__(
        self,
        api: TrialAPI,
        dist: DistributedContext,
        train: TrainContext,
        preempt: PreemptContext,
        config: dict[str, Any],
    ) -> None:
        self._api = api
        self._dist = dist
        self._train = train
        self._preempt = preempt
        searcher = config.get("searcher") or {}
        self.metric: str | None = searcher.get("metric")
        self.smaller_is_better: bool = bool(searcher.get("smaller_is_better", True))
        self.max_length: int | None = None
        self.unit: str | None = None  # "records" | "batches" | "epochs"
        length = searcher.get("max_length")
        if isinstance(length, int) and not isinstance(length, bool):
            self.max_length, self.unit = length, "batches"
        elif isinstance(length, dict):
            for unit, value in length.items():
                if value is not None:
                    self.max_length, self.unit = int(value), unit

    def operations(self) -> Iterator[SearcherOperation]:
        """The operations for this trial, one at a time; each must be completed
        (:meth:`SearcherOperation.report_completed`) before the next is asked for. With several
        workers every worker iterates; the chief fetches and hands the lengths on."""
        while True:
            length = self._next_length() if self._dist.is_chief else None
            length = self._dist.broadcast(length)
            if length is None:
                return
            op = SearcherOperation(self, length, self._dist.is_chief)
            yield op
            if not op.completed:
                raise RuntimeError(
                    f"operation ValidateAfter({length}) was not completed: call "
                    "op.report_completed(metric) before asking for the next operation"
                )

    def _next_length(self) -> int | None:
        """The chief's next length, None when done (or preempted while waiting)."""
        delay = POLL_MIN_SECONDS
        while True:
            length, completed = self._api.searcher_operation()
            if length is not None:
                return length
            if completed or self._preempt.peek():
                return None
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX_SECONDS)

    def progress(self, units_done: float) -> float:
        """``units_done / max_length`` clamped to 0..1 (0 when there is no max_length)."""
        if not self.max_length or not math.isfinite(units_done):
            return 0.0
        return min(1.0, max(0.0, units_done / self.max_length))
