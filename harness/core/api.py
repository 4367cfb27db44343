"""The trial's REST calls to the master, in one place (docs/design/experiments.md, "REST used by
the harness"). Everything else in ``harness.core`` speaks through :class:`TrialAPI`.

A master restart or a brief network cut should not crash a trial that has trained for hours,
so calls that never reached the master are retried a few times; errors the master answered
(4xx, 5xx) are not, since repeating them would not help.

Reports that need no answer (metrics, progress) do not make training wait: they are queued and
sent in order by one background thread (:mod:`harness.core.reporter`), and every other call
first waits for that queue, so the master always sees the calls in the order they were made. A
report that failed in the background is raised by the next call or :meth:`TrialAPI.flush`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from harness.client import MasterClient, MasterUnreachableError
from harness.core.reporter import QUEUE_SIZE, Reporter

log = logging.getLogger("harness.core")

# httpx logs every request at INFO: in a trial's log (scripts often configure INFO) that would be
# a line per metrics report, burying the training's own output. Unless someone chose a level.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

# Seconds to wait before each retry of a call that did not reach the master.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
# Long polls get this much longer than they ask the master to wait before the client gives up.
LONG_POLL_MARGIN_SECONDS = 30.0

T = TypeVar("T")


class TrialAPI:
    """The REST calls of one trial run, authenticated with the allocation's token.

    ``client`` is used by the caller's thread and by the reporter's (``httpx.Client`` may be
    shared between threads); ``queue_size`` bounds the reports waiting to be sent.
    """

    def __init__(
        self,
        client: MasterClient,
        *,
        trial_id: int,
        trial_run_id: int,
        task_id: str,
        allocation_id: str,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.client = client
        self.trial_id = trial_id
        self.trial_run_id = trial_run_id
        self.task_id = task_id
        self.allocation_id = allocation_id
        self.retry_delays = retry_delays
        self._reporter = Reporter(maxsize=queue_size)

    def flush(self) -> None:
        """Wait until the master has answered every queued report; raises the error of one
        that failed (see :mod:`harness.core.reporter`)."""
        self._reporter.flush()

    def close(self, *, raise_error: bool = True) -> None:
        """Send the queued reports and stop the reporter's thread (does not close ``client``).
        With ``raise_error=False`` a failed report is logged instead of raised."""
        self._reporter.close(raise_error=raise_error)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        for delay in self.retry_delays:
            try:
                return call()
            except MasterUnreachableError as exc:
                log.warning("%s: %s; retrying in %.0fs", what, exc, delay)
                time.sleep(delay)
        return call()

    def _post(self, path: str, body: Any = None) -> Any:
        """POST after every queued report, and wait for the answer."""
        self.flush()
        return self._send(path, body)

    def _send(self, path: str, body: Any) -> Any:
        return self._retrying(f"POST {path}", lambda: self.client.post(path, body))

    def _queue_post(self, path: str, body: Any) -> None:
        """POST in the background, after every earlier report (no answer to wait for)."""
        self._reporter.submit(f"POST {path}", lambda: self._send(path, body))

    # ---- trials ------------------------------------------------------------------------------

    def report_metrics(self, group: str, steps_completed: int, metrics: dict[str, Any]) -> None:
        """Queued (:meth:`_queue_post`)."""
        self._queue_post(
            f"/api/v1/trials/{self.trial_id}/metrics",
            {
                "metrics": {
                    "trialId": self.trial_id,
                    "trialRunId": self.trial_run_id,
                    "stepsCompleted": steps_completed,
                    "avgMetrics": metrics,
                },
                "group": group,
            },
        )

    def report_progress(self, progress: float) -> None:
        """Queued (:meth:`_queue_post`)."""
        self._queue_post(f"/api/v1/trials/{self.trial_id}/progress", {"progress": progress})

    def report_early_exit(self, reason: str) -> None:
        self._post(f"/api/v1/trials/{self.trial_id}/early_exit", {"reason": reason})

    def searcher_operation(self) -> tuple[int | None, bool]:
        """``(length of the current ValidateAfter or None, whether the searcher is done)``."""
        path = f"/api/v1/trials/{self.trial_id}/searcher/operation"
        self.flush()
        answer = self._retrying(f"GET {path}", lambda: self.client.get(path))
        op = answer.get("op") or None
        length = None
        if op is not None:
            try:
                length = int(op["validateAfter"]["length"])
            except (KeyError, TypeError, ValueError):
                raise RuntimeError(
                    f"unexpected searcher operation from the master: {op!r}"
                ) from None
        return length, bool(answer.get("completed"))

    def complete_operation(self, length: int, searcher_metric: float) -> None:
        self._post(
            f"/api/v1/trials/{self.trial_id}/searcher/completed_operation",
            {"op": {"validateAfter": {"length": length}}, "searcherMetric": searcher_metric},
        )

    # ---- checkpoints -------------------------------------------------------------------------

    def report_checkpoint(
        self, uuid: str, resources: dict[str, int], metadata: dict[str, Any]
    ) -> None:
        self._post(
            "/api/v1/checkpoints",
            {
                "checkpoint": {
                    "uuid": uuid,
                    "taskId": self.task_id,
                    "allocationId": self.allocation_id,
                    "reportTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "resources": resources,
                    "metadata": metadata,
                    "state": "STATE_COMPLETED",
                }
            },
        )

    # ---- preemption --------------------------------------------------------------------------

    def ack_preemption(self) -> None:
        self._post(f"/api/v1/allocations/{self.allocation_id}/signals/ack_preemption")


def poll_preemption(client: MasterClient, allocation_id: str, timeout_seconds: int) -> bool:
    """One long poll: whether the master wants this allocation to stop (answers at the latest
    after ``timeout_seconds``). ``client`` must allow that long a read."""
    answer = client.get(
        f"/api/v1/allocations/{allocation_id}/signals/preemption",
        params={"timeoutSeconds": timeout_seconds},
    )
    return answer.get("preempt") is True
