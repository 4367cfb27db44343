"""Sending reports without making training wait: one background thread, one FIFO queue.

Training and validation metrics and progress need no answer, so :class:`~harness.core.api.
TrialAPI` hands them to a :class:`Reporter`, whose thread sends them one after another in the
order they were made; the training thread only waits for the queue, not for the network. Every
call that does wait for the master's answer (searcher operations, completed operations,
checkpoints, early exits, preemption acknowledgements) first :meth:`Reporter.flush`\\ es, so the
master has stored every earlier report before it sees that call: a completed operation comes
after the validation metrics it refers to, a checkpoint after the metrics of its steps.

Nothing is lost silently. A report that fails in the background (after ``TrialAPI``'s retries
of an unreachable master) keeps its error, and the next report or flush raises it, as if that
call had failed, and does nothing else; the reports queued behind the failed one are not sent
either (a synchronous caller would have stopped at the failure) and the error's note says how
many. The queue is bounded (:data:`QUEUE_SIZE`): with the master down, report calls block once
it is full rather than memory growing.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("harness.core")

# Reports waiting to be sent before report calls block (backpressure when the master is down).
QUEUE_SIZE = 1000

_Item = tuple[str, Callable[[], object]]


class Reporter:
    """Runs the calls :meth:`submit` is given on one background thread, in order.

    The thread starts with the first :meth:`submit` (workers that never report have none) and
    is a daemon; :meth:`close` (``harness.core``'s ``__exit__``) sends what is queued and stops
    it, and if the interpreter exits without that, an ``atexit`` hook still sends the queue.
    """

    def __init__(self, *, maxsize: int = QUEUE_SIZE) -> None:
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        # The first background failure not raised yet, what it was, and the reports dropped
        # behind it since.
        self._error: BaseException | None = None
        self._failed = ""
        self._dropped = 0

    def submit(self, what: str, call: Callable[[], object]) -> None:
        """Queue ``call`` (``what`` names it in errors, e.g. ``POST /api/v1/...``) behind every
        earlier one; blocks while the queue is full. If an earlier call failed, raises its
        error instead and queues nothing."""
        self._raise_pending()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{what}: harness.core's context is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)
                self._thread.start()
                atexit.register(self._at_exit)
        self._queue.put((what, call))

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

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                what, call = item
                with self._lock:
                    if self._error is not None:
                        self._dropped += 1
                        continue
                try:
                    call()
                except BaseException as exc:  # raised on the caller's thread later
                    log.warning("%s failed: %s (the next report or flush raises it)", what, exc)
                    with self._lock:
                        self._error, self._failed, self._dropped = exc, what, 0
            finally:
                self._queue.task_done()

    def _take_error(self) -> tuple[BaseException | None, str]:
        with self._lock:
            error, what, dropped = self._error, self._failed, self._dropped
            self._error, self._failed, self._dropped = None, "", 0
        note = f"{what} failed in the background"
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
