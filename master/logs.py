"""Task logs: stored in the database, tailed by followers woken as lines arrive.

Lines come from agents (a task's stdout/stderr, in batches) and from the master itself (state
changes and failure reasons, ``source="master"``), so ``det task logs`` tells the whole story.

Writing is the hot path (an agent fleet's output): a batch is written with one statement —
``COPY … FROM STDIN`` on PostgreSQL, one ``executemany`` of plain tuples on SQLite — with no ORM
object or SQLAlchemy type processing per line; other writes (an agent's last applied message
sequence number) may share its transaction. Reading returns plain rows of :data:`LOG_COLUMNS`
by keyset pages (``id > after``), so a long log streams in bounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from master import models
from master.db import Database

# One stored line, as the agent sends it: ``{"timestamp", "stdtype", "line"}`` (agent.protocol's
# LogEntry shape, validated as a whole batch, not as an object per line).
EntryDict = dict[str, Any]

_INSERT_COLUMNS: tuple[str, ...] = ("task_id", "allocation_id", "agent_id", "timestamp")
_INSERT_COLUMNS += ("stdtype", "level", "source", "log")
LOG_COLUMNS = ("id", *_INSERT_COLUMNS)
_SQLITE_INSERT = (
    f"INSERT INTO task_logs ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('?' * 8)})"
)
_PG_COPY = f"COPY task_logs ({', '.join(_INSERT_COLUMNS)}) FROM STDIN"
_TASK = ("INFO", "task")  # the level and source of a line an agent sends
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    stdtype: str
    log: str
    level: str = "INFO"
    source: str = "task"

    @property
    def fields(self) -> tuple[str, str, str]:
        """Level, source and text: the columns after the stream."""
        return (self.level, self.source, self.log)


def _text(value: str) -> str:
    # PostgreSQL's text cannot hold NUL; a task may print one.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _copy_field(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def insert_lines(
    session: Session,
    task_id: str,
    allocation_id: str | None,
    agent_id: str | None,
    lines: Sequence[LogLine | EntryDict],
) -> None:
    """Write ``lines`` of one task in the session's transaction with one statement."""
    insert_rows(session, [line_row(task_id, allocation_id, agent_id, line) for line in lines])


def line_row(
    task_id: str, allocation_id: str | None, agent_id: str | None, line: LogLine | EntryDict
) -> tuple[Any, ...]:
    """One line as a tuple of ``_INSERT_COLUMNS``, for :func:`insert_rows`."""
    if isinstance(line, LogLine):
        return (task_id, allocation_id, agent_id, line.timestamp, line.stdtype, *line.fields)
    head = (task_id, allocation_id, agent_id, line["timestamp"], line["stdtype"])
    return (*head, *_TASK, line["line"])


def insert_rows(session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write ``rows`` (tuples of ``_INSERT_COLUMNS``, of any tasks) with one statement."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        buffer = io.StringIO()
        buffer.writelines(
            f"{_copy_field(task)}\t{_copy_field(allocation)}\t{_copy_field(agent)}\t"
            f"{_utc(ts).isoformat()}\t{_copy_field(stdtype)}\t{level}\t{source}\t"
            f"{_text(log).translate(_COPY_ESCAPES)}\n"
            for task, allocation, agent, ts, stdtype, level, source, log in rows
        )
        buffer.seek(0)
        dbapi = connection.connection.dbapi_connection
        assert dbapi is not None
        with contextlib.closing(dbapi.cursor()) as cursor:
            cursor.copy_expert(_PG_COPY, buffer)
        return
    text_time = models.sqlite_datetime
    connection.exec_driver_sql(
        _SQLITE_INSERT,
        [
            (task, allocation, agent, text_time(ts), stdtype, level, source, _text(log))
            for task, allocation, agent, ts, stdtype, level, source, log in rows
        ],
    )


def master_line(text: str, now: datetime, level: str = "INFO") -> LogLine:
    """A line the master itself writes into a task's log (state changes, failure reasons)."""
    return LogLine(now, "stdout", text, level=level, source="master")


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
        lines: Sequence[LogLine | EntryDict],
        also: Callable[[Session], None] | None = None,
    ) -> None:
        """Store ``lines`` (and run ``also`` in the same transaction), then wake followers."""
        if not lines:
            return

        def write(session: Session) -> None:
            insert_lines(session, task_id, allocation_id, agent_id, lines)
            if also is not None:
                also(session)

        await self.db.run(write)
        self.stored(task_id, [as_log_line(line) for line in lines])

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


def as_log_line(line: LogLine | EntryDict) -> LogLine:
    if isinstance(line, LogLine):
        return line
    return LogLine(line["timestamp"], line["stdtype"], line["line"])


def read_logs(
    session: Session, task_ids: str | Sequence[str], after_id: int, limit: int | None
) -> Sequence[Row[Any]]:
    """Rows of :data:`LOG_COLUMNS` of the task(s) with an id above ``after_id``, in id order."""
    table = models.TaskLog.__table__
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    where = table.c.task_id == ids[0] if len(ids) == 1 else table.c.task_id.in_(ids)
    query = (
        select(*(table.c[name] for name in LOG_COLUMNS))
        .where(where, table.c.id > after_id)
        .order_by(table.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return session.execute(query).all()
