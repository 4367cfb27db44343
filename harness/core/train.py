"""Reporting training progress: metrics, progress and early exits (``core.train``).

Metrics and progress reports return at once: a background thread sends them to the master in
order (:mod:`harness.core.reporter`). A report that failed there is raised by the next report,
by :meth:`TrainContext.flush` or when the ``with harness.core.init()`` block ends.

Only the chief talks to the master. Other workers may call the same methods (so a script need
not branch on its rank); their metrics are checked, which catches a NaN on any worker, and
then dropped: averaging across workers is the caller's business (``core.distributed``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from harness.core.api import TrialAPI
from harness.core.distributed import DistributedContext
from harness.core.metrics import InvalidMetricError, Number, check_metrics


class EarlyExitReason(StrEnum):
    """Why a trial stopped before the searcher was done with it."""

    INVALID_HP = "EXITED_REASON_INVALID_HP"
    USER_REQUESTED_STOP = "EXITED_REASON_USER_REQUESTED_STOP"


class InvalidHP(Exception):
    """Raise from training code when these hyperparameters cannot work (the model does not fit,
    a combination makes no sense): the trainer reports an early exit with reason
    ``EXITED_REASON_INVALID_HP`` and exits 0, so the searcher moves on instead of retrying."""


class TrainContext:
    def __init__(self, api: TrialAPI, dist: DistributedContext) -> None:
        self._api = api
        self._dist = dist

    def report_training_metrics(self, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        """Report ``metrics`` (name -> number) of training up to ``steps_completed`` batches."""
        self._report("training", steps_completed, metrics)

    def report_validation_metrics(self, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        """Report ``metrics`` of a validation after ``steps_completed`` batches of training."""
        self._report("validation", steps_completed, metrics)

    def _report(self, group: str, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        steps = _steps(steps_completed)
        checked: dict[str, Number] = check_metrics(metrics, f"{group} metrics")
        if self._dist.is_chief:
            self._api.report_metrics(group, steps, checked)

    def report_progress(self, fraction: float) -> None:
        """How far this trial is, 0..1 (clamped), for the UI and ``det experiment list``."""
        value = float(fraction)
        if not math.isfinite(value):
            raise ValueError(f"progress must be a finite number between 0 and 1, got {fraction}")
        if self._dist.is_chief:
            self._api.report_progress(min(1.0, max(0.0, value)))

    def flush(self) -> None:
        """Wait until the master has every report made so far. Reports are sent in the
        background, in order; this raises the error of one that failed. Calls that wait for the
        master anyway (checkpoints, searcher operations) and leaving ``harness.core.init()``'s
        ``with`` block flush first, so a script rarely needs this."""
        if self._dist.is_chief:
            self._api.flush()

    def report_early_exit(self, reason: EarlyExitReason | str) -> None:
        """Tell the master this trial stops for good before the searcher is done with it; exit 0
        afterwards."""
        if self._dist.is_chief:
            self._api.report_early_exit(EarlyExitReason(reason).value)


def _steps(steps_completed: int) -> int:
    if isinstance(steps_completed, bool) or not isinstance(steps_completed, int):
        if callable(getattr(steps_completed, "__index__", None)):
            steps_completed = steps_completed.__index__()
        else:
            raise InvalidMetricError(
                f"steps_completed must be an integer number of batches, got {steps_completed!r}"
            )
    if steps_completed < 0:
        raise InvalidMetricError(f"steps_completed must not be negative, got {steps_completed}")
    return steps_completed
