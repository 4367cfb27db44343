"""Messages for the master, kept in the order the agent produced them.

While the link is up the outbox drains as fast as the socket takes it; while it is down it
holds everything, so the master later sees each allocation's start, logs and exit in order,
once. Memory is bounded by log lines: past :data:`MAX_BUFFERED_LOG_ENTRIES`, the oldest lines
are dropped (never a start or exit message: they are few and the master's state depends on
them). Each allocation that lost lines gets one stderr line saying how many, placed where the
gap is, just before its next log batch or exit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime

from agent.protocol import (
    AllocationExited,
    AllocationStarted,
    InterruptionNotice,
    LogBatch,
    LogEntry,
)

MAX_BUFFERED_LOG_ENTRIES = 100_000

Outgoing = AllocationStarted | AllocationExited | LogBatch | InterruptionNotice


def dropped_notice(allocation_id: str, count: int, limit: int) -> LogBatch:
    line = (
        f"[flotilla-agent] {count} log line(s) dropped while the master was unreachable "
        f"(the agent buffers at most {limit} lines)"
    )
    entry = LogEntry(timestamp=datetime.now(UTC), stdtype="stderr", line=line)
    return LogBatch(allocation_id=allocation_id, entries=[entry])


class Outbox:
    """A FIFO of :data:`Outgoing` messages with a cap on buffered log entries.

    Single consumer: :meth:`take` the next message, send it, and :meth:`give_back` it if the
    send failed so it goes out first on the next connection.
    """

    def __init__(self, max_log_entries: int = MAX_BUFFERED_LOG_ENTRIES) -> None:
        self.max_log_entries = max_log_entries
        self._items: deque[Outgoing] = deque()
        self._log_entries = 0
        self._dropped: dict[str, int] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def log_entries(self) -> int:
        return self._log_entries

    def messages(self) -> list[Outgoing]:
        """A snapshot of what is queued, oldest first (for status and tests)."""
        return list(self._items)

    def exited_allocations(self) -> list[str]:
        """Allocations whose exit is queued here and not yet delivered, oldest first."""
        return [m.allocation_id for m in self._items if isinstance(m, AllocationExited)]

    def put(self, message: Outgoing) -> None:
        self._items.append(message)
        if isinstance(message, LogBatch):
            self._log_entries += len(message.entries)
            if self._log_entries > self.max_log_entries:
                self._drop_oldest(self._log_entries - self.max_log_entries)
        if self._items:
            self._ready.set()

    def take(self) -> Outgoing | None:
        """The next message to send, or ``None`` when empty."""
        if not self._items:
            return None
        head = self._items[0]
        if isinstance(head, LogBatch | AllocationExited):
            dropped = self._dropped.pop(head.allocation_id, 0)
            if dropped:
                return dropped_notice(head.allocation_id, dropped, self.max_log_entries)
        self._items.popleft()
        if isinstance(head, LogBatch):
            self._log_entries -= len(head.entries)
        if not self._items:
            self._ready.clear()
        return head

    def give_back(self, message: Outgoing) -> None:
        """Put a message that could not be sent back at the front."""
        self._items.appendleft(message)
        if isinstance(message, LogBatch):
            self._log_entries += len(message.entries)
        self._ready.set()

    async def wait(self) -> None:
        """Return once there is something to take."""
        await self._ready.wait()

    def _drop_oldest(self, count: int) -> None:
        index = 0
        while count > 0 and index < len(self._items):
            message = self._items[index]
            if not isinstance(message, LogBatch):
                index += 1
                continue
            n = min(count, len(message.entries))
            alloc = message.allocation_id
            self._dropped[alloc] = self._dropped.get(alloc, 0) + n
            self._log_entries -= n
            count -= n
            if n == len(message.entries):
                del self._items[index]
            else:
                self._items[index] = LogBatch(allocation_id=alloc, entries=message.entries[n:])
                index += 1
