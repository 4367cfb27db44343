"""What one scheduler pass has to store, say and do once its events are handled.

Handlers and the fit never await the database or a socket: they queue their writes (one
function of a session each, run in order), the task log lines they write, the messages for
agents and the hooks to call. :meth:`PassWork.flush` then runs every write and log line in ONE
transaction and, only once it is durable, wakes log followers, sends the messages (in the order
queued, so a ``welcome`` precedes the work for that agent) and calls the hooks. The scheduler
answers a pass's events after that, so nothing is answered or sent before it is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from agent.protocol import MasterMessage
from master.db import Database
from master.logs import LogLine, LogStore, insert_rows, line_row, master_line
from master.scheduler.state import AgentLink, Allocation, Row
from master.scheduler.store import Finished, save_finished, save_states

log = logging.getLogger(__name__)

Write = Callable[[Session], Any]
Hook = Callable[[], Awaitable[None]]


@dataclass
class PassWork:
    """``inserts``: rows of each allocation submitted in this pass (``submitted``), in the
    order they reference each other (a task before its allocation), added first. ``saves``:
    allocations whose state to store, as they are when the pass is stored (so one row write
    each however often the pass changed them; stored before ``writes``, which may then end
    them). ``writes``: every other write, in order. ``finished``: allocations ended for
    good, stored together after the writes."""

    inserts: list[list[Row]] = field(default_factory=list)
    submitted: list[Allocation] = field(default_factory=list)
    saves: dict[str, Allocation] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    log_lines: list[tuple[str, str | None, LogLine]] = field(default_factory=list)
    sends: list[tuple[AgentLink, MasterMessage, str]] = field(default_factory=list)
    hooks: list[tuple[Hook, str]] = field(default_factory=list)
    woken: set[str] = field(default_factory=set)
    # Allocations this pass ended: gone from the scheduler's memory for the rest of the pass,
    # but shown there again while their end is being stored (see Scheduler._flush).
    ended: dict[str, Allocation] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.inserts
            or self.saves
            or self.writes
            or self.log_lines
            or self.sends
            or self.hooks
            or self.woken
        )

    def insert(self, allocation: Allocation, rows: list[Row]) -> None:
        self.submitted.append(allocation)
        self.inserts.append(rows)

    def save(self, allocation: Allocation) -> None:
        self.saves[allocation.id] = allocation

    def write(self, fn: Write) -> None:
        self.writes.append(fn)

    def finish(self, finished: Finished) -> None:
        self.finished.append(finished)

    def master_line(
        self,
        task_id: str,
        allocation_id: str | None,
        text: str,
        now: datetime,
        level: str = "INFO",
    ) -> None:
        self.log_lines.append((task_id, allocation_id, master_line(text, now, level)))

    def send(self, link: AgentLink, message: MasterMessage, agent_id: str) -> None:
        self.sends.append((link, message, agent_id))

    def call(self, hook: Hook, what: str) -> None:
        self.hooks.append((hook, what))


def insert_submitted(session: Session, inserts: list[list[Row]]) -> None:
    """The first row of every submission, then every second: one multi-row INSERT per table,
    each after the rows it references."""
    for depth in range(max((len(rows) for rows in inserts), default=0)):
        by_model: dict[type[Any], list[dict[str, Any]]] = {}
        for rows in inserts:
            if len(rows) > depth:
                model, values = rows[depth]
                by_model.setdefault(model, []).append(values)
        for model, values_list in by_model.items():
            session.execute(insert(model), values_list)


class PassFlusher:
    """Stores a pass's work on a thread of its own: the API's many short transactions on the
    default executor never make a pass wait for a worker."""

    def __init__(self, db: Database, logs: LogStore) -> None:
        self.db = db
        self.logs = logs
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scheduler-db")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def store(self, work: PassWork) -> None:
        """Run ``work``'s writes and log lines in one transaction."""
        if not (work.inserts or work.saves or work.writes or work.finished or work.log_lines):
            return
        rows = [
            line_row(task_id, allocation_id, None, line)
            for task_id, allocation_id, line in work.log_lines
        ]

        def write_all(session: Session) -> None:
            insert_submitted(session, work.inserts)
            save_states(session, list(work.saves.values()))
            for write in work.writes:
                write(session)
            save_finished(session, work.finished)
            insert_rows(session, rows)

        # Database.transaction runs it again if the connection is lost half-way (a PostgreSQL
        # restart): memory has already changed, so the pass's writes must not be dropped.
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self.db.transaction, write_all
        )

    async def deliver(self, work: PassWork) -> None:
        """What follows a durable pass: log followers woken, messages sent, hooks called."""
        by_task: dict[str, list[LogLine]] = {}
        for task_id, _, line in work.log_lines:
            by_task.setdefault(task_id, []).append(line)
        for task_id, lines in by_task.items():
            self.logs.stored(task_id, lines)
        for task_id in work.woken - by_task.keys():
            self.logs.wake(task_id)
        for link, message, agent_id in work.sends:
            try:
                await link.send(message)
            except ConnectionError as exc:
                # The socket's reader reports the disconnect; the reconnect wait covers the rest.
                log.warning("could not send %s to agent %s: %s", message.type, agent_id, exc)
        for hook, what in work.hooks:
            try:
                await hook()
            except Exception:
                log.exception("%s failed", what)
