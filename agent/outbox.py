"""Messages for the master, kept in the order the agent produced them until it acknowledges them.

While the link is up the outbox drains as fast as the socket takes it; while it is down it
holds everything, so the master later sees each allocation's start, logs and exit in order,
once. A message is numbered (``seq``, 1, 2, … for this agent process) when it is first taken
to be sent and stays here, *unacknowledged*, until the master's ``ack`` (or a ``welcome``'s
``last_seq``) covers it; after a reconnect, :meth:`Outbox.rewind` puts the unacknowledged ones
back in front, with their numbers, and the master skips any it had applied already.

Memory is bounded by log lines: past :data:`MAX_BUFFERED_LOG_ENTRIES` (sent or not), the oldest
lines not yet sent are dropped (never a start or exit message: they are few and the master's
state depends on them; never a message already numbered, which the master may have stored).
Each allocation that lost lines gets one stderr line saying how many, placed where the gap is,
just before its next log batch or exit.
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

    Single consumer: :meth:`take` the next message and send it; :meth:`ack` what the master
    acknowledged; :meth:`rewind` when a new connection starts.
    """

    def __init__(self, max_log_entries: int = MAX_BUFFERED_LOG_ENTRIES) -> None:
        self.max_log_entries = max_log_entries
        self._items: deque[Outgoing] = deque()  # not sent on this connection yet
        self._unacked: deque[Outgoing] = deque()  # sent, numbered, not acknowledged
        self._next_seq = 1
        self._log_entries = 0
        self._dropped: dict[str, int] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        """Messages not yet acknowledged, sent or not."""
        return len(self._items) + len(self._unacked)

    @property
    def pending(self) -> int:
        """Messages not sent on the current connection yet."""
        return len(self._items)

    @property
    def log_entries(self) -> int:
        return self._log_entries

    @property
    def last_seq(self) -> int:
        """The number given to the last message taken (0: none yet)."""
        return self._next_seq - 1

    def messages(self) -> list[Outgoing]:
        """A snapshot of what is not acknowledged, oldest first (for status and tests)."""
        return [*self._unacked, *self._items]

    def exited_allocations(self) -> list[str]:
        """Allocations whose exit is queued here and not yet acknowledged, oldest first."""
        return [m.allocation_id for m in self.messages() if isinstance(m, AllocationExited)]

    def put(self, message: Outgoing) -> None:
        self._items.append(message)
        if isinstance(message, LogBatch):
            self._log_entries += len(message.entries)
            if self._log_entries > self.max_log_entries:
                self._drop_oldest(self._log_entries - self.max_log_entries)
        if self._items:
            self._ready.set()

    def take(self) -> Outgoing | None:
        """The next message to send, numbered, or ``None`` when nothing is pending. It stays
        here, unacknowledged, until :meth:`ack` covers its ``seq``."""
        if not self._items:
            return None
        head = self._items[0]
        message: Outgoing = head
        if head.seq == 0 and isinstance(head, LogBatch | AllocationExited):
            dropped = self._dropped.pop(head.allocation_id, 0)
            if dropped:
                message = dropped_notice(head.allocation_id, dropped, self.max_log_entries)
                self._log_entries += 1
        if message is head:
            self._items.popleft()
        if message.seq == 0:
            message.seq = self._next_seq
            self._next_seq += 1
        self._unacked.append(message)
        if not self._items:
            self._ready.clear()
        return message

    def ack(self, seq: int) -> int:
        """Forget the sent messages numbered up to ``seq``; returns how many."""
        forgotten = 0
        while self._unacked and self._unacked[0].seq <= seq:
            message = self._unacked.popleft()
            if isinstance(message, LogBatch):
                self._log_entries -= len(message.entries)
            forgotten += 1
        return forgotten

    def rewind(self, last_seq: int) -> None:
        """A new connection whose master applied everything up to ``last_seq``: forget that,
        and send what it has not seen again, in order and with the same numbers."""
        self.ack(last_seq)
        self._items.extendleft(reversed(self._unacked))
        self._unacked.clear()
        if self._items:
            self._ready.set()

    async def wait(self) -> None:
        """Return once there is something to take."""
        await self._ready.wait()

    def _drop_oldest(self, count: int) -> None:
        index = 0
        while count > 0 and index < len(self._items):
            message = self._items[index]
            if not isinstance(message, LogBatch) or message.seq:
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
