"""The master's end of the agent WebSocket (see ``agent/protocol.py`` for the conversation).

The socket handler authenticates the join token, turns frames into scheduler events, and runs
the liveness check: a ping every ``agent_ping_interval``; silence for ``agent_ping_timeout``
closes the link. Log batches do not go through the scheduler: they are written straight to the
task log store, and — because this handler awaits each write before reading the next frame — an
allocation's logs are stored before its exit is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from agent.protocol import (
    AGENT_WS_PATH,
    AgentMessageAdapter,
    AllocationExited,
    AllocationStarted,
    Hello,
    InterruptionNotice,
    LogBatch,
    MasterMessage,
    Ping,
    Pong,
    Reject,
)
from master.logs import LogLine
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
    answer = await state.scheduler.call(AgentConnected(hello=first, link=link))
    if isinstance(answer, Reject):
        await link.close(answer.reason)
        return
    agent_id = first.agent_id
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
            message = AgentMessageAdapter.validate_json(await websocket.receive_text())
            last_heard, busy = time.monotonic(), True
            if isinstance(message, LogBatch):
                await _store_logs(state, agent_id, message)
            elif isinstance(message, AllocationStarted | AllocationExited):
                # Wait for the scheduler so its lines ("running on …") land in the task log
                # before the log batches that follow this message.
                await state.scheduler.call(
                    AgentReport(agent_id=agent_id, link=link, message=message)
                )
            elif isinstance(message, InterruptionNotice):
                await state.scheduler.call(
                    AgentNotice(agent_id=agent_id, link=link, notice=message)
                )
            elif isinstance(message, Pong):
                continue
            else:
                reason = f"unexpected {message.type} message"
                break
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
        if link.timed_out:
            reason = "no message from the agent within the ping timeout"
        state.scheduler.post(
            AgentDisconnected(agent_id=agent_id, link=link, reason=reason, shut_down=left)
        )
        await link.close(reason)


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


async def _store_logs(state: MasterState, agent_id: str, batch: LogBatch) -> None:
    allocation = state.scheduler.allocations.get(batch.allocation_id)
    if allocation is None:
        return
    lines = [LogLine(e.timestamp, e.stdtype, e.line) for e in batch.entries]
    await state.logs.append(allocation.task_id, batch.allocation_id, agent_id, lines)
