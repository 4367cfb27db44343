"""Preemption signals: the master asks a running allocation to checkpoint and exit.

The harness long-polls ``GET /api/v1/allocations/{id}/signals/preemption``; pausing an
experiment (or the scheduler wanting a trial's slots) raises the flag and wakes it. Flags live
in memory: after a master restart the engine raises them again for the trials it is pausing.
"""

from __future__ import annotations

import asyncio
import contextlib


class PreemptionSignals:
    def __init__(self) -> None:
        self._raised: set[str] = set()
        self._acked: set[str] = set()
        self._waiters: dict[str, asyncio.Event] = {}

    def signal(self, allocation_id: str) -> None:
        self._raised.add(allocation_id)
        waiter = self._waiters.pop(allocation_id, None)
        if waiter is not None:
            waiter.set()

    def is_raised(self, allocation_id: str) -> bool:
        return allocation_id in self._raised

    def ack(self, allocation_id: str) -> None:
        self._acked.add(allocation_id)

    def acked(self, allocation_id: str) -> bool:
        return allocation_id in self._acked

    def forget(self, allocation_id: str) -> None:
        """The allocation ended: drop its flag and release anyone still waiting."""
        self._raised.discard(allocation_id)
        self._acked.discard(allocation_id)
        waiter = self._waiters.pop(allocation_id, None)
        if waiter is not None:
            waiter.set()

    async def wait(self, allocation_id: str, timeout: float) -> bool:
        """Whether the allocation should stop, waiting up to ``timeout`` seconds for a signal."""
        if allocation_id in self._raised or timeout <= 0:
            return allocation_id in self._raised
        waiter = self._waiters.setdefault(allocation_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout)
        return allocation_id in self._raised
