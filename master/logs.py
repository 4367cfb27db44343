"""Task logs: stored in the database, tailed by followers woken as lines arrive.

Lines come from agents (a task's stdout/stderr, in batches) and from the master itself (state
changes and failure reasons, ``source="master"``), so ``det task logs`` tells the whole story.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from master import models
from master.db import Database


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    stdtype: str
    log: str
    level: str = "INFO"
    source: str = "task"


class LogStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiters: dict[str, asyncio.Event] = {}
        # Called with every batch once stored (task logs to CloudWatch); must not block.
        self.on_append: Callable[[str, Sequence[LogLine]], None] | None = None

    async def append(
        self,
        task_id: str,
        allocation_id: str | None,
        agent_id: str | None,
        lines: Sequence[LogLine],
    ) -> None:
        if not lines:
            return
        rows = log_rows(task_id, allocation_id, agent_id, lines)
        await self.db.run(partial(insert_log_rows, rows=rows))
        self.stored(task_id, lines)

    def stored(self, task_id: str, lines: Sequence[LogLine]) -> None:
        """Tell followers and ``on_append`` about ``lines`` once they are durable."""
        if self.on_append is not None:
            self.on_append(task_id, lines)
        self.wake(task_id)

    async def master_line(
        self, task_id: str, allocation_id: str | None, text: str, now: datetime, level: str = "INFO"
    ) -> None:
        await self.append(task_id, allocation_id, None, [master_line(text, now, level)])

    def wake(self, task_id: str) -> None:
        waiter = self._waiters.pop(task_id, None)
        if waiter is not None:
            waiter.set()

    async def wait(self, task_id: str, timeout: float) -> None:
        """Return when new lines for ``task_id`` may exist, or after ``timeout`` seconds."""
        waiter = self._waiters.setdefault(task_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout)


def master_line(text: str, now: datetime, level: str = "INFO") -> LogLine:
    """A line the master itself writes into a task's log (state changes, failure reasons)."""
    return LogLine(now, "stdout", text, level=level, source="master")


def log_rows(
    task_id: str, allocation_id: str | None, agent_id: str | None, lines: Sequence[LogLine]
) -> list[dict[str, Any]]:
    """``lines`` as ``task_logs`` rows, for :func:`insert_log_rows`."""
    return [
        {
            "task_id": task_id,
            "allocation_id": allocation_id,
            "agent_id": agent_id,
            "timestamp": line.timestamp,
            "stdtype": line.stdtype,
            "level": line.level,
            "source": line.source,
            # PostgreSQL's text cannot hold NUL; a task may print one.
            "log": line.log.replace("\x00", "\ufffd"),
        }
        for line in lines
    ]


def insert_log_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(models.TaskLog), rows)


def read_logs(
    session: Session, task_id: str, after_id: int, limit: int | None
) -> list[models.TaskLog]:
    query = (
        select(models.TaskLog)
        .where(models.TaskLog.task_id == task_id, models.TaskLog.id > after_id)
        .order_by(models.TaskLog.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))
