"""Sending reports without making training wait: one background thread, one FIFO queue.

Training and validation metrics and progress need no answer, so :class:`~harness.core.api.
TrialAPI` hands them to a :class:`Reporter`, whose thread sends them in the order they were
made, *every report queued at that moment in one request* (up to :data:`MAX_BATCH`): the master
stores a request's metrics in one transaction, so a trial reporting fast costs it a request per
round trip, not per report. The training thread only waits for the queue, not for the network.
Every
call that does wait for the master's answer (searcher operations, completed operations,
checkpoints, early exits, preemption acknowledgements) first :meth:`Reporter.flush`\\ es, so the
master has stored every earlier report before it sees that call: a completed operation comes
after the validation metrics it refers to, a checkpoint after the metrics of its steps.

Nothing is lost silently. A report that fails in the background (after ``TrialAPI``'s retries
of an unreachable master) keeps its error, and the next report or flush raises it, as if that
call had failed, and does nothing else; the reports queued behind the failed one are not sent
either (a synchronous caller would have stopped at the failure) and the error's note says how
many. The queue is bounded (:data:`QUEUE_SIZE`): with the master down, report calls block once
it is full rather than memory growing (training pauses at its next report until the master is
back or ``master_unreachable_timeout`` has passed).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("harness.core")

# Reports waiting to be sent before report calls block (backpressure when the master is down).
QUEUE_SIZE = 1000
# Reports sent in one request at most (the master takes up to 1,000).
MAX_BATCH = 500

_Item = tuple[str, Any]


class Reporter:
    """Sends the reports :meth:`submit` is given with ``send(reports)`` on one background
    thread, in order, as many per call as are queued (at most ``max_batch``).

    The thread starts with the first :meth:`submit` (workers that never report have none) and
    is a daemon; :meth:`close` (``harness.core``'s ``__exit__``) sends what is queued and stops
    it, and if the interpreter exits without that, an ``atexit`` hook still sends the queue.
    """

    def __init__(
        self,
        send: Callable[[list[Any]], object],
        *,
        maxsize: int = QUEUE_SIZE,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # The first background failure not raised yet, what it was, and the reports dropped
        # behind it since.
        self._error: BaseException | None = None
        self._failed = ""
        self._dropped = 0

    def submit(self, what: str, report: Any) -> None:
        """Queue ``report`` (``what`` names it in errors, e.g. ``metrics of step 3``) behind
        every earlier one; blocks while the queue is full. If an earlier one failed, raises its
        error instead and queues nothing."""
        self._raise_pending()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{what}: harness.core's context is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
                self._thread.start()
                atexit.register(self._at_exit)
        self._queue.put((what, report))

    def flush(self) -> None:
        """Wait until every queued call has run; raise the error of one that failed."""
        self._queue.join()
        self._raise_pending()

    def close(self, *, raise_error: bool = True) -> None:
        """Flush and stop the thread. A background failure is raised, or only logged with
        ``raise_error=False`` (closing because of another exception, which matters more)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            atexit.unregister(self._at_exit)
            self._queue.join()
            self._queue.put(None)
            thread.join()
        if raise_error:
            self._raise_pending()
            return
        error, note = self._take_error()
        if error is not None:
            log.error("%s: %s", note, error)

    @property
    def pending(self) -> int:
        """Calls queued or running."""
        return self._queue.unfinished_tasks

    # ---- internals ---------------------------------------------------------------------------

    def _take_batch(self) -> tuple[list[_Item], bool]:
        """The next reports to send (blocking for the first) and whether to stop after them."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        while True:
            batch, stop = self._take_batch()
            try:
                self._send_batch(batch)
            finally:
                for _ in range(len(batch) + stop):
                    self._queue.task_done()
            if stop:
                return

    def _send_batch(self, batch: list[_Item]) -> None:
        if not batch:
            return
        with self._lock:
            if self._error is not None:
                self._dropped += len(batch)
                return
        try:
            self._send([report for _, report in batch])
        except BaseException as exc:  # raised on the caller's thread later
            what = batch[0][0]
            if len(batch) > 1:
                what += f" (and the {len(batch) - 1} report(s) sent with it)"
            log.warning("%s failed: %s (the next report or flush raises it)", what, exc)
            with self._lock:
                self._error, self._failed, self._dropped = exc, what, 0

    def _take_error(self) -> tuple[BaseException | None, str]:
        with self._lock:
            error, what, dropped = self._error, self._failed, self._dropped
            self._error, self._failed, self._dropped = None, "", 0
        note = f"sending {what} failed in the background"
        if dropped:
            note += f"; the {dropped} report(s) queued after it were not sent"
        return error, note

    def _raise_pending(self) -> None:
        error, note = self._take_error()
        if error is not None:
            error.add_note(note)
            raise error

    def _at_exit(self) -> None:
        try:
            self.close(raise_error=False)
        except Exception as exc:  # never fail the interpreter's exit
            log.error("sending the last reports at exit failed: %s", exc)
