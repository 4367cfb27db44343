"""The master's end of the agent WebSocket (see ``agent/protocol.py`` for the conversation).

The socket handler authenticates the join token, turns frames into scheduler events, and runs
the liveness check: a ping every ``agent_ping_interval``; silence for ``agent_ping_timeout``
closes the link. Log batches do not go through the scheduler: they are written straight to the
task log store, and — because this handler awaits each write before reading the next frame — an
allocation's logs are stored before its exit is reported.

Every numbered message is applied once (``master/agent_sequences.py``): one whose ``seq`` is
not above the last applied from the agent's process is skipped, and an ``ack`` follows within
``ACK_INTERVAL`` of the last one applied. Log batches are accepted for an allocation the master
has already ended (failed when its agent did not come back in time, say), from an agent it ran
on, until that agent's ``allocation_exited`` for it — its word that it has sent everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from sqlalchemy.orm import Session

from agent.protocol import (
    AGENT_WS_PATH,
    PROTOCOL_VERSION,
    Ack,
    AgentMessage,
    AgentMessageAdapter,
    AllocationExited,
    AllocationStarted,
    Hello,
    InterruptionNotice,
    LogBatch,
    LogBatchFrame,
    LogBatchFrameAdapter,
    MasterMessage,
    Ping,
    Pong,
    Reject,
)
from master import models
from master.agent_sequences import (
    ACK_INTERVAL,
    AgentSequence,
    Opened,
    remember_ended,
    store_applied,
)
from master.scheduler.state import AgentConnected, AgentDisconnected, AgentNotice, AgentReport
from master.state import MasterState

log = logging.getLogger(__name__)
# RFC 6455 close codes an agent sends when it leaves on purpose: normal closure and "going away"
# (a stopping agent, e.g. one the autoscaler stopped when idle).
AGENT_LEFT_CODES = (1000, 1001)
router = APIRouter()


class WebSocketLink:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.closed = False
        self.timed_out = False
        self.close_reason = ""
        self.acked = 0  # the last seq acknowledged on this link
        self.duplicates = 0  # messages skipped as applied already
        self.ack_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def send(self, message: MasterMessage) -> None:
        if self.closed:
            raise ConnectionError("agent link is closed")
        async with self._lock:
            try:
                await self.websocket.send_text(message.model_dump_json())
            except (RuntimeError, OSError, WebSocketDisconnect) as exc:
                self.closed = True
                raise ConnectionError(str(exc)) from exc

    async def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.websocket.close(code=1000, reason=reason[:120])


@router.websocket(AGENT_WS_PATH)
async def agent_socket(websocket: WebSocket) -> None:
    state: MasterState = websocket.app.state.master
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = state.join_token
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), expected):
        await websocket.close(code=4401, reason="invalid agent join token")
        return
    await websocket.accept()
    link = WebSocketLink(websocket)
    try:
        first = AgentMessageAdapter.validate_json(await websocket.receive_text())
    except (ValidationError, WebSocketDisconnect) as exc:
        await link.close(f"expected a hello message: {exc}")
        return
    if not isinstance(first, Hello):
        await link.close("expected a hello message first")
        return
    # The scheduler sends the welcome (or reject) itself, ahead of any work for this agent.
    agent_id = first.agent_id
    opened = Opened(last_seq=0, restarted=False)
    if first.protocol_version == PROTOCOL_VERSION:  # else the scheduler rejects it
        opened = await state.sequences.open(first, link)
    answer = await state.scheduler.call(
        AgentConnected(hello=first, link=link, last_seq=opened.last_seq, restarted=opened.restarted)
    )
    if isinstance(answer, Reject):
        await state.sequences.close(agent_id, link)
        await link.close(answer.reason)
        return
    link.acked = opened.last_seq
    entry = state.sequences.get(agent_id)
    assert entry is not None
    reason = "connection closed"
    last_heard = time.monotonic()
    # While a message is being handled (a log batch waiting for a database that restarts, say)
    # nothing is read: the silence is the master's own, so it does not count against the agent.
    busy = False
    pinger = asyncio.create_task(
        _ping(link, state, lambda: time.monotonic() if busy else last_heard)
    )
    left = False  # the agent said goodbye (1000/1001): a normal departure
    try:
        while True:
            if busy:
                last_heard, busy = time.monotonic(), False
            message = _parse(await websocket.receive_text())
            last_heard, busy = time.monotonic(), True
            if isinstance(message, Pong):
                continue
            if isinstance(message, Hello):
                reason = "unexpected hello message"
                break
            async with entry.lock:
                if entry.link is not link:
                    reason = "replaced by a newer connection of the same agent"
                    break
                seq = message["seq"] if isinstance(message, dict) else message.seq
                if seq <= entry.applied:
                    link.duplicates += 1
                    continue
                await _apply(state, agent_id, link, entry, message)
                entry.applied = seq
            if link.ack_task is None:
                link.ack_task = asyncio.create_task(_ack_soon(link, state, agent_id))
    except WebSocketDisconnect as exc:
        if exc.code in AGENT_LEFT_CODES:
            reason = f"the agent shut down ({exc.reason or 'going away'})"
            left = True
        else:
            reason = f"closed by the agent (code {exc.code})"
    except ValidationError as exc:
        reason = f"malformed message: {exc.errors()[0]['msg']}"
    except (RuntimeError, OSError) as exc:  # reading a socket this side already closed
        reason = link.close_reason or f"connection error: {exc}"
    finally:
        pinger.cancel()
        if link.ack_task is not None:
            link.ack_task.cancel()
        if link.timed_out:
            reason = "no message from the agent within the ping timeout"
        if link.duplicates:
            log.info(
                "agent %s: %d message(s) skipped as applied already", agent_id, link.duplicates
            )
        state.scheduler.post(
            AgentDisconnected(agent_id=agent_id, link=link, reason=reason, shut_down=left)
        )
        await link.close(reason)
        await state.sequences.close(agent_id, link)


def _parse(raw: str) -> LogBatchFrame | AgentMessage:
    """A frame as a message; a log batch (the agent's encoding starts with its type) as plain
    dicts, validated as a whole batch (``LogBatchFrameAdapter``), not an object per line."""
    if raw.startswith('{"type":"log_batch"'):
        with contextlib.suppress(ValidationError):  # the full parser reports what is wrong
            return LogBatchFrameAdapter.validate_json(raw)
    return AgentMessageAdapter.validate_json(raw)


async def _apply(
    state: MasterState,
    agent_id: str,
    link: WebSocketLink,
    entry: AgentSequence,
    message: LogBatchFrame | AgentMessage,
) -> None:
    if isinstance(message, dict | LogBatch):
        await _store_logs(state, agent_id, entry, message)
    elif isinstance(message, AllocationExited) and (
        message.allocation_id not in state.scheduler.allocations
    ):
        await _late_exit(state, agent_id, entry, message)
    elif isinstance(message, AllocationStarted | AllocationExited):
        # Wait for the scheduler so its lines ("running on …") land in the task log
        # before the log batches that follow this message.
        await state.scheduler.call(AgentReport(agent_id=agent_id, link=link, message=message))
        if isinstance(message, AllocationExited):
            remember_ended(entry, message.allocation_id, None)
    elif isinstance(message, InterruptionNotice):
        await state.scheduler.call(AgentNotice(agent_id=agent_id, link=link, notice=message))


async def _ping(link: WebSocketLink, state: MasterState, last_heard: Callable[[], float]) -> None:
    config = state.config
    interval = config.agent_ping_interval.total_seconds()
    timeout = config.agent_ping_timeout.total_seconds()
    seq = 0
    while True:
        await asyncio.sleep(interval)
        if time.monotonic() - last_heard() > timeout:
            link.timed_out = True
            await link.close("ping timeout")
            return
        seq += 1
        try:
            await link.send(Ping(seq=seq))
        except ConnectionError:
            return


async def _store_logs(
    state: MasterState, agent_id: str, entry: AgentSequence, batch: LogBatchFrame | LogBatch
) -> None:
    if isinstance(batch, LogBatch):
        allocation_id, seq = batch.allocation_id, batch.seq
        entries: list[Any] = [e.model_dump() for e in batch.entries]
    else:
        allocation_id, seq, entries = batch["allocation_id"], batch.get("seq", 0), batch["entries"]
    task_id = await _log_task(state, agent_id, entry, allocation_id)
    if task_id is None:
        log.debug("agent %s: dropping logs of allocation %s (not its)", agent_id, allocation_id)
        return
    also = partial(store_applied, agent_id=agent_id, boot_id=entry.boot_id, seq=seq)
    await state.logs.append(task_id, allocation_id, agent_id, entries, also=also)
    entry.stored = max(entry.stored, seq)


async def _log_task(
    state: MasterState, agent_id: str, entry: AgentSequence, allocation_id: str
) -> str | None:
    """The task whose log takes this agent's lines for ``allocation_id``: a live allocation
    placed on the agent, or an ended one that ran there and whose exit the agent has not sent
    yet; None otherwise."""
    allocation = state.scheduler.allocations.get(allocation_id)
    if allocation is not None:
        return allocation.task_id if agent_id in allocation.agent_slots else None
    if allocation_id not in entry.ended:
        task_id = await state.db.run(
            partial(_ended_allocation_task, allocation_id=allocation_id, agent_id=agent_id)
        )
        remember_ended(entry, allocation_id, task_id)
    return entry.ended[allocation_id]


def _ended_allocation_task(session: Session, allocation_id: str, agent_id: str) -> str | None:
    row = session.get(models.Allocation, allocation_id)
    if row is None or agent_id not in (row.agent_slots or {}):
        return None
    return row.task_id


async def _late_exit(
    state: MasterState, agent_id: str, entry: AgentSequence, message: AllocationExited
) -> None:
    """The exit of an allocation the master has ended already: the end of its output."""
    task_id = await _log_task(state, agent_id, entry, message.allocation_id)
    remember_ended(entry, message.allocation_id, None)
    if task_id is None:
        return
    how = f"exit code {message.exit_code}" if message.exit_code is not None else "no exit code"
    await state.logs.master_line(
        task_id,
        message.allocation_id,
        f"agent '{agent_id}' reported the end of this task's process ({how}"
        + (f": {message.reason}" if message.reason else "")
        + ") after the master had ended it; its output is complete",
        state.clock(),
    )


async def _ack_soon(link: WebSocketLink, state: MasterState, agent_id: str) -> None:
    """Acknowledge, ``ACK_INTERVAL`` from now, what the link applied by then (stored first)."""
    await asyncio.sleep(ACK_INTERVAL)
    link.ack_task = None
    entry = state.sequences.get(agent_id)
    if entry is None or entry.link is not link:
        return
    seq = await state.sequences.stored_applied(agent_id)
    if seq > link.acked:
        with contextlib.suppress(ConnectionError):
            await link.send(Ack(seq=seq))
            link.acked = seq
