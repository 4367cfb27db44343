"""WebSockets through ``/proxy/<task-id>/…``: frames to a task's WebSocket server, or, for a
shell, the raw TCP bytes of an SSH connection (Determined's tunnel sends SSH that way).

Who may pass is decided as for HTTP (:mod:`master.proxy`), before the handshake is answered:
a refusal is an HTTP status, not a socket that opens and closes. Open connections are
registered with the hub so that ending the task closes them; an open shell tunnel is an SSH
session, which keeps the shell from being idle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from master.api.errors import ApiError, error_body
from master.proxy import (
    UPSTREAM_CONNECT_SECONDS,
    ProxyHub,
    Target,
    caller,
    forwarded_headers,
    hub_of,
    ready_shell,
    resolve_target,
    state_of,
    upstream_headers,
    upstream_path,
)

router = APIRouter()

WS_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "origin",
    }
)
CLOSE_GOING_AWAY = 1001
_UNSENDABLE_CLOSE_CODES = {1005, 1006, 1015}


async def _deny(websocket: WebSocket, error: ApiError) -> None:
    """Refuse the handshake with an HTTP status when the server can, else close (403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            JSONResponse(error_body(error.status, error.message), status_code=error.status)
        )
    else:
        await websocket.close(code=1008, reason=error.message[:120])


@router.websocket("/proxy/{task_id}/{path:path}")
async def proxy_websocket(websocket: WebSocket, task_id: str, path: str) -> None:
    state, hub = state_of(websocket), hub_of(websocket)
    try:
        who = await caller(websocket)
        # Without credentials only a ready shell's tunnel opens (SSH keys guard it); anything
        # else, an unknown id included, gets the same 401.
        shell = ready_shell(state, task_id) if who is None else None
        target = shell or await resolve_target(state, task_id, who)
        tunnel = target.allocation.task_type == "SHELL"
        extra = await upstream_headers(state, hub, task_id)
    except ApiError as error:
        await _deny(websocket, error)
        return
    if tunnel:
        await _tunnel_tcp(websocket, hub, target)
        return
    requested = websocket.headers.get("sec-websocket-protocol", "")
    subprotocols = [p.strip() for p in requested.split(",") if p.strip()]
    try:
        upstream = await connect(
            f"ws://{target.address}{upstream_path(websocket)}",
            additional_headers=forwarded_headers(websocket, extra, WS_HANDSHAKE_HEADERS),
            subprotocols=subprotocols or None,  # type: ignore[arg-type]
            open_timeout=UPSTREAM_CONNECT_SECONDS,
            max_size=None,
            compression=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        await _deny(websocket, ApiError(status, f"task {task_id}'s server refused: {status}"))
        return
    except (OSError, TimeoutError) as exc:
        await _deny(websocket, ApiError(502, f"task {task_id}'s server did not answer: {exc}"))
        return
    await websocket.accept(subprotocol=upstream.subprotocol)
    hub.touch(task_id)

    async def close(reason: str) -> None:
        with contextlib.suppress(Exception):
            await websocket.close(code=CLOSE_GOING_AWAY, reason=reason)
        await upstream.close(code=CLOSE_GOING_AWAY, reason=reason)

    with hub.connection(task_id, close, tunnel=False):
        await _pump(websocket, upstream, lambda: hub.touch(task_id))


async def _tunnel_tcp(websocket: WebSocket, hub: ProxyHub, target: Target) -> None:
    """A shell: binary frames carry the raw bytes of a TCP connection to its SSH server."""
    task_id = target.allocation.task_id
    host, _, port = target.address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), UPSTREAM_CONNECT_SECONDS
        )
    except (OSError, TimeoutError) as exc:
        await _deny(websocket, ApiError(502, f"shell {task_id}'s SSH server did not answer: {exc}"))
        return
    await websocket.accept()

    async def close(reason: str) -> None:
        with contextlib.suppress(Exception):
            await websocket.close(code=CLOSE_GOING_AWAY, reason=reason)
        writer.close()

    async def from_client() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    async def from_server() -> None:
        while chunk := await reader.read(65536):
            await websocket.send_bytes(chunk)
        with contextlib.suppress(Exception):
            await websocket.close(code=1000)

    with hub.connection(task_id, close, tunnel=True):
        try:
            await _until_one_ends(from_client(), from_server())
        finally:
            writer.close()


async def _pump(
    websocket: WebSocket, upstream: ClientConnection, touch: Callable[[], None]
) -> None:
    async def from_client() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code", 1000)
                await upstream.close(code=1000 if code in _UNSENDABLE_CLOSE_CODES else code)
                return
            touch()
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def from_upstream() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                touch()
                if isinstance(data, bytes):
                    await websocket.send_bytes(data)
                else:
                    await websocket.send_text(data)
        code = upstream.close_code or 1000
        with contextlib.suppress(Exception):
            await websocket.close(
                code=1011 if code in _UNSENDABLE_CLOSE_CODES else code,
                reason=upstream.close_reason or "",
            )

    try:
        await _until_one_ends(from_client(), from_upstream())
    finally:
        await upstream.close()


async def _until_one_ends(*pumps: Coroutine[Any, Any, None]) -> None:
    """Run the two directions of a connection until either ends, then stop the other. What a
    pump raises once its peer has gone (closed sockets, cancellation) is the expected end."""
    tasks = [asyncio.create_task(pump) for pump in pumps]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(
                asyncio.CancelledError,
                ConnectionClosed,
                OSError,
                WebSocketDisconnect,
                RuntimeError,
            ):
                await task
