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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select
from sqlalchemy.orm import Session

from master import models
from master.db import Database, GroupCommit

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
# What needs rewriting in a COPY text field (NUL: PostgreSQL's text cannot hold it). A search is
# ~6x cheaper than str.translate with multi-character replacements, which most lines skip.
_COPY_SPECIAL = re.compile(r"[\\\t\n\r\x00]")


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


def _copy_field(value: str | None) -> str:
    return "\\N" if value is None else _copy_text(value)


def insert_lines(
    session: Session,
    task_id: str,
    allocation_id: str | None,
    agent_id: str | None,
    lines: Sequence[LogLine | EntryDict],
) -> None:
    """Write ``lines`` of one task in the session's transaction with one statement."""
    connection = session.connection()
    entries = [line for line in lines if not isinstance(line, LogLine)]
    if connection.dialect.name == "postgresql" and len(entries) == len(lines):
        _copy(connection, _entries_copy_text(task_id, allocation_id, agent_id, entries))
        return
    insert_rows(session, [line_row(task_id, allocation_id, agent_id, line) for line in lines])


def _copy_text(value: str) -> str:
    """``value`` as a COPY text field (NUL replaced, specials escaped)."""
    if _COPY_SPECIAL.search(value) is None:
        return value
    return _text(value).translate(_COPY_ESCAPES)


def _pg_time(value: datetime) -> str:
    """A timestamp PostgreSQL's timestamptz reads as the same instant (naive means UTC)."""
    return value.isoformat() if value.tzinfo is not None else f"{value.isoformat()}+00:00"


def _entries_copy_text(
    task_id: str, allocation_id: str | None, agent_id: str | None, entries: Sequence[EntryDict]
) -> str:
    """COPY text of an agent's lines of one task: the columns every line shares are escaped
    once per batch, not once per line."""
    head = f"{_copy_field(task_id)}\t{_copy_field(allocation_id)}\t{_copy_field(agent_id)}\t"
    level, source = _TASK
    tails: dict[str, str] = {}  # stdtype -> the columns between timestamp and text
    rows = []
    for entry in entries:
        stdtype = entry["stdtype"]
        tail = tails.get(stdtype)
        if tail is None:
            tail = tails[stdtype] = f"\t{_copy_field(stdtype)}\t{level}\t{source}\t"
        rows.append(f"{head}{_pg_time(entry['timestamp'])}{tail}{_copy_text(entry['line'])}\n")
    return "".join(rows)


def _copy(connection: Connection, text: str) -> None:
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    with contextlib.closing(dbapi.cursor()) as cursor:
        cursor.copy_expert(_PG_COPY, io.StringIO(text))


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
        _copy(
            connection,
            "".join(
                f"{_copy_field(task)}\t{_copy_field(allocation)}\t{_copy_field(agent)}\t"
                f"{_pg_time(ts)}\t{_copy_field(stdtype)}\t{level}\t{source}\t"
                f"{_copy_text(log)}\n"
                for task, allocation, agent, ts, stdtype, level, source, log in rows
            ),
        )
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
        # Batches from many agents at once share transactions (and agent sequence numbers are
        # stored through the same writer: see master.agent_sequences).
        self.writes = GroupCommit(db)
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

        await self.writes.run(write)
        if self.on_append is not None:
            self.on_append(task_id, [as_log_line(line) for line in lines])
        self.wake(task_id)

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


# The API's timestamp text (``master.api.wire.timestamp``: RFC 3339, UTC, microseconds, "Z"),
# made by the database from the stored value. SQLite holds SQLAlchemy's DATETIME text (naive
# UTC, always with microseconds: "2030-01-02 03:04:05.678901").
_PG_WIRE_TIME = """to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_SQLITE_WIRE_TIME = """substr("timestamp", 1, 10) || 'T' || substr("timestamp", 12) || 'Z'"""
# A task logging right now is, to PostgreSQL's statistics, a task with a handful of lines (every
# new task is): it then plans a page as a bitmap scan of *all* the task's lines after the cursor
# plus a sort, per page, so reading a long log is quadratic (30 ms a page of 5,000 at 50,000
# lines left, against 3 ms). The page is only cheap as an ordered index scan of
# (task_id, id), which the planner picks once sorting is off for the page's transaction.
_PG_PAGE_PLAN = "SET LOCAL enable_sort = off; "


def read_log_page(
    session: Session, task_ids: str | Sequence[str], after_id: int, limit: int
) -> Sequence[Any]:
    """What :func:`read_logs` returns, as plain tuples straight from the DB-API, with the
    timestamp as the API's text (formatted by the database): the read path of a long log, with
    no SQLAlchemy row, datetime or type processing per line."""
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    columns = ", ".join(
        (_PG_WIRE_TIME if postgres else _SQLITE_WIRE_TIME) if name == "timestamp" else name
        for name in LOG_COLUMNS
    )
    tasks = ", ".join([mark] * len(ids))
    query = (
        f"{_PG_PAGE_PLAN if postgres else ''}SELECT {columns} FROM task_logs "
        f"WHERE task_id IN ({tasks}) AND id > {mark} ORDER BY id LIMIT {mark}"
    )
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    with contextlib.closing(dbapi.cursor()) as cursor:
        cursor.execute(query, (*ids, after_id, limit))
        return cursor.fetchall()


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
