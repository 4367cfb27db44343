"""Whether the master wants this trial to stop now (``core.preempt``).

The master preempts a trial to give its slots to other work, to pause the experiment, or
because its agent is going away. A background thread on the chief long-polls
``GET /api/v1/allocations/{id}/signals/preemption`` and remembers the answer, so
:meth:`PreemptContext.should_preempt` costs nothing and can be called every batch. Once the
master said "preempt" the answer stays True.

A preempted trial saves a checkpoint, calls :meth:`PreemptContext.acknowledge` and exits 0;
the master restarts it later from that checkpoint. Without the acknowledgement a clean exit
reads as "this trial is finished".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from harness.client import ClientError, MasterClient
from harness.core.api import LONG_POLL_MARGIN_SECONDS, TrialAPI, poll_preemption
from harness.core.distributed import DistributedContext

log = logging.getLogger("harness.core")

# Seconds each long poll asks the master to hold the request open.
POLL_SECONDS = 60
# Seconds between attempts while the master cannot be reached.
RETRY_SECONDS = 10.0
# How long the first should_preempt() waits for the master's first answer.
FIRST_ANSWER_SECONDS = 10.0


class _Watcher(threading.Thread):
    """Long-polls until the master says "preempt" or :meth:`stop` is called.

    A daemon: a long poll cannot be interrupted, and the process must not wait for it to exit.
    It has its own HTTP client, whose read timeout outlasts a long poll.
    """

    def __init__(
        self,
        make_client: Callable[[float], MasterClient],
        allocation_id: str,
        poll_seconds: int,
        retry_seconds: float,
    ) -> None:
        super().__init__(name="preemption-watcher", daemon=True)
        self._make_client = make_client
        self._allocation_id = allocation_id
        self._poll_seconds = poll_seconds
        self._retry_seconds = retry_seconds
        self.preempt = False
        self.answered = threading.Event()
        self._stopping = threading.Event()

    def run(self) -> None:
        client = self._make_client(self._poll_seconds + LONG_POLL_MARGIN_SECONDS)
        timeout = 0  # a quick first answer, then long polls
        try:
            while not self._stopping.is_set():
                try:
                    preempt = poll_preemption(client, self._allocation_id, timeout)
                except ClientError as exc:
                    if self._stopping.is_set():
                        return
                    log.warning(
                        "cannot ask the master about preemption (retrying in %.0fs): %s",
                        self._retry_seconds,
                        exc,
                    )
                    self.answered.set()  # callers go on training meanwhile
                    self._stopping.wait(self._retry_seconds)
                    continue
                if preempt:
                    self.preempt = True
                    self.answered.set()
                    return
                self.answered.set()
                timeout = self._poll_seconds
        finally:
            client.close()

    def stop(self) -> None:
        self._stopping.set()


class PreemptContext:
    def __init__(
        self,
        api: TrialAPI,
        dist: DistributedContext,
        make_client: Callable[[float], MasterClient],
        *,
        poll_seconds: int = POLL_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._api = api
        self._dist = dist
        self._watcher: _Watcher | None = None
        if dist.is_chief:
            self._watcher = _Watcher(make_client, api.allocation_id, poll_seconds, retry_seconds)
        self._acknowledged = False

    def start(self) -> None:
        if self._watcher is not None and not self._watcher.is_alive():
            self._watcher.start()

    def should_preempt(self) -> bool:
        """Whether to checkpoint and exit now. Cheap (a cached answer); with several workers it
        is a collective that hands every worker the chief's answer, so call it on all of them
        at the same points."""
        flag = False
        if self._watcher is not None:
            if not self._watcher.answered.is_set():
                self._watcher.answered.wait(FIRST_ANSWER_SECONDS)
            flag = self._watcher.preempt
        return self._dist.broadcast_flag(flag)

    def peek(self) -> bool:
        """The chief's cached answer without synchronizing workers (False on other workers)."""
        return self._watcher is not None and self._watcher.preempt

    def acknowledge(self) -> None:
        """Tell the master this trial is stopping because it was asked to and wants to be
        resumed later. Call it after the checkpoint is saved, then exit 0. Only the chief
        sends it (once); on other workers it does nothing."""
        if self._dist.is_chief and not self._acknowledged:
            self._api.ack_preemption()
            self._acknowledged = True

    @property
    def acknowledged(self) -> bool:
        return self._acknowledged

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
