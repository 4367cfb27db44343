"""What the master has applied from each agent process: the protocol's sequence numbers.

Every agent → master message the agent's outbox sends carries ``seq`` (1, 2, … per run of the
agent process, named by ``hello.boot_id``). The master applies a message only if its ``seq`` is
above the last one applied for that agent process, remembers that number in memory at once and
in the ``agent_sequences`` table durably:

- a ``log_batch`` writes its number in the same transaction as its lines, so a batch is stored
  exactly once even across a master crash;
- other messages (start, exit, spot notice) go through the scheduler; their number is written
  before the ``ack`` that covers them (at most :data:`ACK_INTERVAL` later) and when the link
  ends. A master killed in between may see one of them again after its restart: an exit or a
  start of an allocation that has ended since is ignored, so the only trace is a repeated
  "running on agent" line.

One agent may have two links for a moment (it reconnected before the master noticed the old
link die). Each agent has one lock, held while a message is applied and while a new link opens:
a new link waits for the message being applied on the old one, then takes over, and the old
link applies nothing more. The number the new ``welcome`` echoes is therefore exactly what was
applied.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.orm import Session

from agent.protocol import Hello
from master import models
from master.db import Database, GroupCommit

ACK_INTERVAL = 0.2  # seconds between a link's acks while it has something new to acknowledge
ENDED_CACHE = 10_000  # ended allocations remembered per agent for late log batches


@dataclass
class AgentSequence:
    """One agent's current process and what was applied from it."""

    boot_id: str
    applied: int
    stored: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    link: object | None = None  # the link allowed to apply this agent's messages
    # Allocations this master has ended, as seen by this agent's late log batches: the task
    # they belong to, or None (not this agent's, or its exit has arrived: no more logs).
    ended: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Opened:
    last_seq: int
    restarted: bool  # the master knew an earlier process of this agent


def utc_now() -> datetime:
    return datetime.now(UTC)


def _load(session: Session, hello: Hello) -> tuple[str | None, int]:
    """The stored boot id and last seq of ``hello``'s agent; records a new process."""
    row = session.get(models.AgentSequence, hello.agent_id)
    if row is not None and row.boot_id == hello.boot_id:
        return row.boot_id, row.last_seq
    previous = row.boot_id if row is not None else None
    if row is None:
        row = models.AgentSequence(agent_id=hello.agent_id)
        session.add(row)
    row.boot_id, row.booted_at, row.last_seq = hello.boot_id, hello.booted_at or utc_now(), 0
    row.updated_at = utc_now()
    return previous, 0


def store_applied(session: Session, agent_id: str, boot_id: str, seq: int) -> None:
    """Record ``seq`` as applied from the agent's process ``boot_id`` (never lowers it)."""
    store_many_applied(session, [(agent_id, boot_id, seq)])


_TABLE = cast(Table, models.AgentSequence.__table__)
# One statement for many agents (an executemany): never lowers a number, never touches the row
# of another process of the agent.
_STORE_APPLIED = (
    update(_TABLE)
    .where(
        _TABLE.c.agent_id == bindparam("p_agent"),
        _TABLE.c.boot_id == bindparam("p_boot"),
        _TABLE.c.last_seq < bindparam("p_seq"),
    )
    .values(last_seq=bindparam("p_seq"), updated_at=bindparam("p_now"))
)


def store_many_applied(session: Session, applied: list[tuple[str, str, int]]) -> None:
    """:func:`store_applied` for many (agent id, boot id, seq) at once."""
    if applied:
        now = utc_now()
        session.connection().execute(
            _STORE_APPLIED,
            [{"p_agent": a, "p_boot": b, "p_seq": n, "p_now": now} for a, b, n in applied],
        )


class AgentSequences:
    """The registry, one per master; used only on the event loop."""

    def __init__(self, db: Database, writes: GroupCommit | None = None) -> None:
        self.db = db
        # Shared with the log store, whose batches write this table too: one writer of these
        # rows at a time, so two transactions never lock them in different orders.
        self._writes = writes or GroupCommit(db)
        self._agents: dict[str, AgentSequence] = {}
        # Numbers waiting to be stored, and the one write under way: every agent's number
        # that comes due while a write runs goes in the next one, so a thousand agents' acks
        # cost a few transactions, not a thousand.
        self._due: dict[str, tuple[AgentSequence, int]] = {}
        self._next: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    def get(self, agent_id: str) -> AgentSequence | None:
        return self._agents.get(agent_id)

    async def open(self, hello: Hello, link: object) -> Opened:
        """``link`` becomes the one that applies ``hello``'s agent's messages; returns the seq
        to echo in its welcome and whether the agent process restarted."""
        entry = self._agents.get(hello.agent_id)
        lock = entry.lock if entry is not None else asyncio.Lock()
        async with lock:
            entry = self._agents.get(hello.agent_id)
            if entry is not None and entry.boot_id == hello.boot_id:
                await self._flush(hello.agent_id, entry)
                entry.link = link
                return Opened(entry.applied, restarted=False)
            if entry is not None:
                entry.link = None  # a process that is gone: its link applies nothing more
            stored_boot, last_seq = await self.db.run(partial(_load, hello=hello))
            restarted = stored_boot is not None and stored_boot != hello.boot_id
            self._agents[hello.agent_id] = AgentSequence(
                boot_id=hello.boot_id, applied=last_seq, stored=last_seq, lock=lock, link=link
            )
            return Opened(last_seq, restarted)

    async def close(self, agent_id: str, link: object) -> None:
        """The link ended: store what it applied."""
        entry = self._agents.get(agent_id)
        if entry is not None and entry.link is link:
            async with entry.lock:
                await self._flush(agent_id, entry)
                entry.link = None

    async def stored_applied(self, agent_id: str) -> int:
        """Store what was applied from the agent (for an ack); returns that seq."""
        entry = self._agents[agent_id]
        await self._flush(agent_id, entry)
        return entry.stored

    async def _flush(self, agent_id: str, entry: AgentSequence) -> None:
        """Store what was applied from the agent, in the next shared write."""
        seq = entry.applied
        if entry.stored >= seq:
            return
        self._due[agent_id] = (entry, seq)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        done = self._next
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_due())
        await asyncio.shield(done)

    async def _write_due(self) -> None:
        while self._due:
            due, self._due = self._due, {}
            done, self._next = self._next, None
            assert done is not None
            applied = sorted((agent_id, e.boot_id, seq) for agent_id, (e, seq) in due.items())
            try:
                await self._writes.run(partial(store_many_applied, applied=applied))
            except Exception as exc:
                done.set_exception(exc)
                done.exception()  # retrieved: each waiter raises it
                continue
            for entry, seq in due.values():
                entry.stored = max(entry.stored, seq)
            done.set_result(None)


def remember_ended(entry: AgentSequence, allocation_id: str, task_id: str | None) -> None:
    if len(entry.ended) >= ENDED_CACHE:
        entry.ended.pop(next(iter(entry.ended)))
    entry.ended[allocation_id] = task_id
