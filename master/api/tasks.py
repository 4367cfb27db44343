"""``/api/v1/tasks``: active allocations, one task with its allocations, and task logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import partial
from json.encoder import encode_basestring_ascii as quote
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.errors import not_found
from master.api.openapi import NDJSON, documented, streamed
from master.api.schemas import LOG_LINE, TaskList, TaskReply
from master.api.wire import timestamp
from master.logs import read_log_page
from master.scheduler.state import AllocationState
from master.state import MasterState

router = APIRouter(prefix="/api/v1/tasks")

TASK_TYPES = {"COMMAND": "TASK_TYPE_COMMAND"}
FOLLOW_POLL_SECONDS = 1.0
LOG_PAGE = 5000  # lines per database read and per chunk written to the client
QUOTE_CACHE = 1024  # distinct repeated values (ids, levels) kept encoded per stream


def _state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


def allocation_json(
    row: models.Allocation, task: models.Task, state: MasterState
) -> dict[str, Any]:
    live = state.scheduler.allocations.get(row.id)
    return {
        "taskId": task.id,
        "allocationId": row.id,
        "state": live.state.value if live else row.state,
        "isReady": live.is_ready if live else row.is_ready,
        "startTime": timestamp(row.started_at),
        "endTime": timestamp(row.ended_at),
        "exitCode": row.exit_code,
        "exitReason": row.exit_reason,
        "waitingReason": live.waiting_reason if live else None,
        "slots": task.slots,
        "resourcePool": task.resource_pool,
        "agents": sorted((live.agent_slots if live else row.agent_slots or {}).keys()),
    }


def task_json(session: Session, task: models.Task, state: MasterState) -> dict[str, Any]:
    rows = session.scalars(
        select(models.Allocation)
        .where(models.Allocation.task_id == task.id)
        .order_by(models.Allocation.created_at)
    )
    return {
        "taskId": task.id,
        "taskType": TASK_TYPES.get(task.task_type, f"TASK_TYPE_{task.task_type}"),
        "description": task.description,
        "allocations": [allocation_json(r, task, state) for r in rows],
        "startTime": timestamp(task.created_at),
        "endTime": timestamp(task.ended_at),
        "state": task.state,
        "resourcePool": task.resource_pool,
    }


def load_task(session: Session, task_id: str) -> models.Task:
    task = session.get(models.Task, task_id)
    if task is None:
        raise not_found(f"task {task_id}")
    return task


@router.get("", **documented(TaskList))
async def list_tasks(
    request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """Active allocations in Determined's ``allocationIdToSummary`` shape."""
    scheduler = _state(request).scheduler
    summaries = {}
    for allocation in scheduler.allocations.values():
        summaries[allocation.id] = {
            "taskId": allocation.task_id,
            "allocationId": allocation.id,
            "name": allocation.task_type.title(),
            "type": allocation.task_type,
            "state": allocation.state.value,
            "username": allocation.owner,
            "registeredTime": timestamp(allocation.submitted_at),
            "resourcePool": allocation.pool,
            "slotsNeeded": allocation.slots,
            "priority": allocation.priority,
            "schedulerType": "priority",
            "resources": [
                {
                    "containerId": allocation.id,
                    "agentDevices": {
                        agent_id: {"devices": [{"id": s} for s in slots]}
                        for agent_id, slots in allocation.agent_slots.items()
                    },
                }
            ]
            if allocation.state != AllocationState.QUEUED
            else [],
        }
    return {"allocationIdToSummary": summaries}


@router.get("/{task_id}", **documented(TaskReply, 404))
def get_task(
    task_id: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = _state(request)
    with state.db.session() as session:
        return {"task": task_json(session, load_task(session, task_id), state)}


def log_json(row: Row[Any]) -> dict[str, Any]:
    """One stored line (a row of ``master.logs.LOG_COLUMNS``) in Determined's log shape."""
    return {
        "id": str(row.id),
        "taskId": row.task_id,
        "allocationId": row.allocation_id,
        "agentId": row.agent_id,
        "containerId": row.allocation_id,
        "rankId": None,
        "timestamp": timestamp(row.timestamp),
        "level": f"LOG_LEVEL_{row.level}",
        "stdtype": row.stdtype,
        "source": row.source,
        "log": row.log + "\n",
        "message": row.log,
    }


class LogPageEncoder:
    """NDJSON ``{"result": …}`` lines for rows of ``master.logs.LOG_COLUMNS`` whose timestamp is
    already the API's text (``master.logs.read_log_page``), byte for byte what
    ``json.dumps({"result": log_json(row)})`` writes (plus ``trialId`` last, with ``message``
    ending in its newline, for a trial's log). Built by string formatting: the columns a task's
    lines share (task, allocation, agent; level, stream, source) are encoded once per stream,
    so a line costs one string escape and one format."""

    def __init__(self, trial_id: int | None = None) -> None:
        self.trial_id = trial_id
        self._heads: dict[tuple[str, str | None, str | None], str] = {}
        self._middles: dict[tuple[str, str, str], str] = {}

    def _head(self, task_id: str, allocation_id: str | None, agent_id: str | None) -> str:
        alloc = _quoted(allocation_id)
        head = (
            f'"taskId": {_quoted(task_id)}, "allocationId": {alloc}, '
            f'"agentId": {_quoted(agent_id)}, "containerId": {alloc}, "rankId": null, '
        )
        if len(self._heads) < QUOTE_CACHE:
            self._heads[(task_id, allocation_id, agent_id)] = head
        return head

    def _middle(self, level: str, stdtype: str, source: str) -> str:
        middle = (
            f'"level": {_quoted("LOG_LEVEL_" + level)}, "stdtype": {_quoted(stdtype)}, '
            f'"source": {_quoted(source)}, "log": '
        )
        if len(self._middles) < QUOTE_CACHE:
            self._middles[(level, stdtype, source)] = middle
        return middle

    def encode(self, rows: Sequence[Sequence[Any]]) -> bytes:
        heads, middles = self._heads, self._middles
        trial = self.trial_id
        end = "}}\n" if trial is None else f', "trialId": {trial}}}}}\n'
        out = []
        for id_, task_id, allocation_id, agent_id, at, stdtype, level, source, log in rows:
            head = heads.get((task_id, allocation_id, agent_id))
            if head is None:
                head = self._head(task_id, allocation_id, agent_id)
            middle = middles.get((level, stdtype, source))
            if middle is None:
                middle = self._middle(level, stdtype, source)
            message = quote(log)
            with_newline = f'{message[:-1]}\\n"'  # quote(log + "\n")
            out.append(
                f'{{"result": {{"id": "{id_}", {head}"timestamp": "{at}", {middle}{with_newline}, '
                f'"message": {with_newline if trial is not None else message}{end}'
            )
        return "".join(out).encode()


def _quoted(value: str | None) -> str:
    return "null" if value is None else quote(value)


def _log_page(
    session: Session, task_id: str, after_id: int, limit: int, encoder: LogPageEncoder
) -> tuple[bytes, int, int]:
    """One page of a task's log, encoded: (NDJSON bytes, rows, last id)."""
    rows = read_log_page(session, task_id, after_id, limit)
    return encoder.encode(rows), len(rows), rows[-1][0] if rows else after_id


@router.get("/{task_id}/logs", **streamed(NDJSON, LOG_LINE, 404))
async def task_logs(
    task_id: str,
    request: Request,
    follow: bool = False,
    limit: int = Query(0, ge=0),
    _: models.User = Depends(auth.current_user),
) -> StreamingResponse:
    """Newline-delimited JSON, one ``{"result": …}`` per line; ``follow`` streams to the end."""
    state = _state(request)
    await state.db.run(lambda s: load_task(s, task_id))

    encoder = LogPageEncoder()

    async def lines() -> AsyncIterator[bytes]:
        last, sent = 0, 0
        while True:
            # Read the task's state before its logs: logs are stored before the task ends, so
            # all of an ended task's logs are visible to the reads that follow.
            ended = await state.db.run(lambda s: load_task(s, task_id).ended_at is not None)
            while True:
                page = min(LOG_PAGE, limit - sent) if limit else LOG_PAGE
                chunk, count, last = await state.db.run(
                    partial(_log_page, task_id=task_id, after_id=last, limit=page, encoder=encoder)
                )
                if chunk:
                    yield chunk
                sent += count
                if limit and sent >= limit:
                    return
                if count < page:
                    break
            if not follow or ended or await request.is_disconnected():
                return
            await state.logs.wait(task_id, FOLLOW_POLL_SECONDS)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
