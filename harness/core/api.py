"""The trial's REST calls to the master, in one place (docs/design/experiments.md, "REST used by
the harness"). Everything else in ``harness.core`` speaks through :class:`TrialAPI`.

A master restart or a network cut should not crash a trial that has trained for hours, so
every call that may not have reached the master (or whose answer was lost) is retried until the
master has been away for ``master_unreachable_timeout`` (:mod:`harness.core.patience`); answers
the master gave (4xx, and 5xx other than gateway errors) are not retried. Every report carries
an idempotency key made when the report was made, the same on every retry, so the master
applies it once however often it arrives.

Reports that need no answer (metrics, progress) do not make training wait: they are queued and
sent in order by one background thread (:mod:`harness.core.reporter`), all queued ones in one
``POST /api/v1/trials/{id}/reports``; every other call first waits for that queue, so the master
always sees the calls in the order they were made. A report that failed in the background is
raised by the next call or :meth:`TrialAPI.flush`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from harness.client import MasterClient
from harness.core.patience import Patience
from harness.core.reporter import QUEUE_SIZE, Reporter

log = logging.getLogger("harness.core")

# httpx logs every request at INFO: in a trial's log (scripts often configure INFO) that would be
# a line per metrics report, burying the training's own output. Unless someone chose a level.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Long polls get this much longer than they ask the master to wait before the client gives up.
LONG_POLL_MARGIN_SECONDS = 30.0

T = TypeVar("T")


class TrialAPI:
    """The REST calls of one trial run, authenticated with the allocation's token.

    ``client`` is used by the caller's thread and by the reporter's (``httpx.Client`` may be
    shared between threads); ``queue_size`` bounds the reports waiting to be sent; ``patience``
    says how long to retry a master that does not answer.
    """

    def __init__(
        self,
        client: MasterClient,
        *,
        trial_id: int,
        trial_run_id: int,
        task_id: str,
        allocation_id: str,
        patience: Patience | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.client = client
        self.trial_id = trial_id
        self.trial_run_id = trial_run_id
        self.task_id = task_id
        self.allocation_id = allocation_id
        self.patience = patience or Patience()
        self._reporter = Reporter(self._send_reports, maxsize=queue_size)

    def flush(self) -> None:
        """Wait until the master has answered every queued report; raises the error of one
        that failed (see :mod:`harness.core.reporter`)."""
        self._reporter.flush()

    def close(self, *, raise_error: bool = True) -> None:
        """Send the queued reports and stop the reporter's thread (does not close ``client``).
        With ``raise_error=False`` a failed report is logged instead of raised."""
        self._reporter.close(raise_error=raise_error)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        return self.patience.call(what, call)

    def _post(self, path: str, body: Any = None) -> Any:
        """POST after every queued report, and wait for the answer; the request carries an
        idempotency key made now and kept across retries."""
        self.flush()
        headers = {IDEMPOTENCY_HEADER: new_key()}
        return self._retrying(f"POST {path}", lambda: self.client.post(path, body, headers=headers))

    def _send_reports(self, reports: list[dict[str, Any]]) -> None:
        path = f"/api/v1/trials/{self.trial_id}/reports"
        body = {"reports": reports}
        self._retrying(f"POST {path}", lambda: self.client.post(path, body))

    # ---- trials ------------------------------------------------------------------------------

    def report_metrics(self, group: str, steps_completed: int, metrics: dict[str, Any]) -> None:
        """Queued (:mod:`harness.core.reporter`) with its idempotency key."""
        report = {
            "key": new_key(),
            "metrics": {
                "metrics": {
                    "trialId": self.trial_id,
                    "trialRunId": self.trial_run_id,
                    "stepsCompleted": steps_completed,
                    "avgMetrics": metrics,
                },
                "group": group,
            },
        }
        self._reporter.submit(f"{group} metrics of step {steps_completed}", report)

    def report_progress(self, progress: float) -> None:
        """Queued (:mod:`harness.core.reporter`) with its idempotency key."""
        self._reporter.submit(f"progress {progress:.3f}", {"key": new_key(), "progress": progress})

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
        """Queued (:mod:`harness.core.reporter`) with its idempotency key, behind the metrics
        of its steps: training goes on while the master is away, and the checkpoint is
        registered once it is back (the next call that waits for an answer waits for it)."""
        checkpoint = {
            "uuid": uuid,
            "taskId": self.task_id,
            "allocationId": self.allocation_id,
            "reportTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "resources": resources,
            "metadata": metadata,
            "state": "STATE_COMPLETED",
        }
        self._reporter.submit(f"checkpoint {uuid}", {"key": new_key(), "checkpoint": checkpoint})

    # ---- preemption --------------------------------------------------------------------------

    def ack_preemption(self) -> None:
        self._post(f"/api/v1/allocations/{self.allocation_id}/signals/ack_preemption")


def new_key() -> str:
    """A report's idempotency key (a random UUID, 32 hex digits)."""
    return uuid.uuid4().hex


def poll_preemption(client: MasterClient, allocation_id: str, timeout_seconds: int) -> bool:
    """One long poll: whether the master wants this allocation to stop (answers at the latest
    after ``timeout_seconds``). ``client`` must allow that long a read."""
    answer = client.get(
        f"/api/v1/allocations/{allocation_id}/signals/preemption",
        params={"timeoutSeconds": timeout_seconds},
    )
    return answer.get("preempt") is True
