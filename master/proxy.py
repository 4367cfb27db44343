"""``/proxy/<task-id>/…``: the master's reverse proxy to interactive tasks on agents.

Agents sit on private addresses; every shell, notebook and TensorBoard is reached through here
(docs/design/interactive-tasks.md). HTTP bodies stream both ways; WebSockets pass frames,
subprotocols and close codes through. Only the task's owner and admins pass (bearer token or the
``auth`` cookie); a shell's WebSocket may be opened without credentials because SSH key
authentication guards what travels through it — Determined's CLI opens it that way.

Browsers get in with a one-use ticket (``POST /api/v1/tasks/{id}/proxy-ticket``) that the proxy
exchanges for a cookie scoped to the task's prefix. Every request and frame counts as activity
for idle timeouts; an open shell tunnel (an SSH session) is activity while it is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from master import auth, models
from master.api.errors import ApiError, error_body, not_found
from master.scheduler.state import Allocation, AllocationState
from master.state import MasterState

log = logging.getLogger(__name__)
router = APIRouter()

TICKET_PARAM = "flotilla_ticket"
TICKET_LIFETIME = timedelta(seconds=60)
UPSTREAM_CONNECT_SECONDS = 10.0
# RFC 7230 §6.1 hop-by-hop headers, plus those the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
# Never forwarded to a task: the caller's master credentials.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
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

Closer = Callable[[str], Awaitable[None]]


@dataclass
class _Ticket:
    user_id: int
    task_id: str
    expires_at: datetime


def _upstream_client() -> httpx.AsyncClient:
    """One client for every task's server. It must keep no cookies: a cookie one user's
    request got back would otherwise be sent with everyone's later requests."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=UPSTREAM_CONNECT_SECONDS),
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


@dataclass
class ProxyHub:
    """The proxy's memory: activity, open connections, tickets and upstream credentials."""

    clock: Callable[[], datetime]
    last_activity: dict[str, datetime] = field(default_factory=dict)
    open_tunnels: dict[str, int] = field(default_factory=dict)
    upstream_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    _connections: dict[str, set[Closer]] = field(default_factory=dict)
    _tickets: dict[str, _Ticket] = field(default_factory=dict)
    http: httpx.AsyncClient = field(default_factory=lambda: _upstream_client())

    def touch(self, task_id: str) -> None:
        self.last_activity[task_id] = self.clock()

    def has_open_tunnel(self, task_id: str) -> bool:
        return self.open_tunnels.get(task_id, 0) > 0

    def issue_ticket(self, user_id: int, task_id: str) -> str:
        now = self.clock()
        self._tickets = {k: t for k, t in self._tickets.items() if t.expires_at > now}
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = _Ticket(user_id, task_id, now + TICKET_LIFETIME)
        return ticket

    def redeem_ticket(self, ticket: str, task_id: str) -> int | None:
        found = self._tickets.pop(ticket, None)
        if found is None or found.task_id != task_id or found.expires_at <= self.clock():
            return None
        return found.user_id

    @contextlib.contextmanager
    def connection(self, task_id: str, closer: Closer, tunnel: bool) -> Any:
        """Register an open proxied WebSocket so that ending the task closes it."""
        self._connections.setdefault(task_id, set()).add(closer)
        if tunnel:
            self.open_tunnels[task_id] = self.open_tunnels.get(task_id, 0) + 1
        try:
            yield
        finally:
            self._connections.get(task_id, set()).discard(closer)
            if tunnel:
                self.open_tunnels[task_id] -= 1

    async def task_ended(self, allocation: Allocation, exit_code: int | None, reason: str) -> None:
        """Scheduler exit hook: close the task's connections and forget it."""
        closers = self._connections.pop(allocation.task_id, set())
        for close in list(closers):
            with contextlib.suppress(Exception):
                await close(f"task ended: {reason}"[:120])
        self.last_activity.pop(allocation.task_id, None)
        self.open_tunnels.pop(allocation.task_id, None)
        self.upstream_headers.pop(allocation.task_id, None)

    async def aclose(self) -> None:
        await self.http.aclose()


def hub_of(connection: HTTPConnection) -> ProxyHub:
    hub: ProxyHub = connection.app.state.proxy
    return hub


def _state(connection: HTTPConnection) -> MasterState:
    state: MasterState = connection.app.state.master
    return state


# ---- who may pass ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    allocation: Allocation
    address: str  # host:port


def _live_allocation(state: MasterState, task_id: str) -> Allocation | None:
    for allocation in state.scheduler.allocations.values():
        if allocation.task_id == task_id:
            return allocation
    return None


def _ended_task_error(session: Session, task_id: str) -> ApiError:
    task = session.get(models.Task, task_id)
    if task is None:
        return not_found(f"task {task_id}")
    return ApiError(404, f"task {task_id} has ended ({task.state}); start a new one")


async def resolve_target(state: MasterState, task_id: str) -> Target:
    """The running, ready allocation of ``task_id`` and where its service listens."""
    allocation = _live_allocation(state, task_id)
    if allocation is None:
        raise await state.db.run(lambda s: _ended_task_error(s, task_id))
    if not allocation.is_ready or not allocation.proxy_address:
        doing = allocation.waiting_reason or {
            AllocationState.QUEUED: "waiting to be scheduled",
            AllocationState.STARTING: "starting on its agent",
            AllocationState.RUNNING: "starting its server",
        }.get(allocation.state, allocation.state.value)
        raise ApiError(503, f"task {task_id} is not ready: {doing}")
    return Target(allocation, allocation.proxy_address)


async def caller(connection: HTTPConnection) -> models.User | None:
    token = auth.request_token(connection)
    if token is None:
        return None
    state = _state(connection)

    def lookup(session: Session) -> models.User | None:
        return auth.user_for_token(session, token, state.clock())

    user = await state.db.run(lookup)
    if user is None:
        raise ApiError(401, "invalid or expired token: log in again with `det user login`")
    return user


def check_access(user: models.User | None, allocation: Allocation) -> None:
    if user is None:
        raise ApiError(401, "authentication required: log in with `det user login`")
    if user.username != allocation.owner and not user.admin:
        raise ApiError(
            403,
            f"user '{user.username}' may not use task {allocation.task_id}: it belongs to "
            f"'{allocation.owner}'",
        )


async def upstream_headers(state: MasterState, hub: ProxyHub, task_id: str) -> dict[str, str]:
    """Credentials the proxy adds for the task's own server (a notebook's Jupyter token)."""
    if task_id not in hub.upstream_headers:

        def read(session: Session) -> dict[str, str]:
            task = session.get(models.Task, task_id)
            token = ((task.config if task else {}).get("secrets") or {}).get("notebook_token")
            return {"authorization": f"token {token}"} if token else {}

        hub.upstream_headers[task_id] = await state.db.run(read)
    return hub.upstream_headers[task_id]


def _forwarded_headers(
    connection: HTTPConnection, extra: dict[str, str], drop: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    headers = [
        (k, v)
        for k, v in connection.headers.items()
        if k not in HOP_BY_HOP and k not in CREDENTIAL_HEADERS and k not in drop
    ]
    cookies = [
        f"{name}={value}"
        for name, value in connection.cookies.items()
        if name != auth.SESSION_COOKIE
    ]
    if cookies:
        headers.append(("cookie", "; ".join(cookies)))
    client = connection.client.host if connection.client else ""
    headers += [
        ("x-forwarded-for", client),
        ("x-forwarded-host", connection.headers.get("host", "")),
        ("x-forwarded-proto", connection.url.scheme.replace("ws", "http")),
    ]
    headers += list(extra.items())
    return headers


def _upstream_path(connection: HTTPConnection) -> str:
    raw = connection.scope.get("raw_path") or connection.url.path.encode()
    path = raw.decode("latin-1")
    query = connection.url.query
    return f"{path}?{query}" if query else path


# ---- HTTP ------------------------------------------------------------------------------------


@router.post("/api/v1/tasks/{task_id}/proxy-ticket")
async def proxy_ticket(
    task_id: str, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """A URL that logs a browser in to ``/proxy/{task_id}/`` once, within a minute."""
    state = _state(request)
    allocation = _live_allocation(state, task_id)
    if allocation is None:
        raise await state.db.run(lambda s: _ended_task_error(s, task_id))
    check_access(user, allocation)
    ticket = hub_of(request).issue_ticket(user.id, task_id)
    return {"ticket": ticket, "url": f"/proxy/{task_id}/?{urlencode({TICKET_PARAM: ticket})}"}


@router.api_route("/proxy/{task_id}", methods=["GET", "HEAD"], include_in_schema=False)
async def proxy_root(task_id: str, request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/proxy/{task_id}/{query}", status_code=307)


@router.api_route(
    "/proxy/{task_id}/{path:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def proxy_http(task_id: str, path: str, request: Request) -> Response:
    state, hub = _state(request), hub_of(request)
    ticket = request.query_params.get(TICKET_PARAM)
    if ticket is not None:
        return await _redeem(state, hub, request, task_id, ticket)
    target = await resolve_target(state, task_id)
    check_access(await caller(request), target.allocation)
    extra = await upstream_headers(state, hub, task_id)
    hub.touch(task_id)
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    upstream_request = hub.http.build_request(
        request.method,
        f"http://{target.address}{_upstream_path(request)}",
        headers=_forwarded_headers(request, extra),
        content=request.stream() if has_body else None,
    )
    try:
        upstream = await hub.http.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        message = f"task {task_id}'s server at {target.address} did not answer: {exc}"
        raise ApiError(502, message) from exc

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                hub.touch(task_id)
                yield chunk
        finally:
            await upstream.aclose()

    response = StreamingResponse(body(), status_code=upstream.status_code)
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in upstream.headers.multi_items()
        if k.lower() not in HOP_BY_HOP
    ]
    return response


async def _redeem(
    state: MasterState, hub: ProxyHub, request: Request, task_id: str, ticket: str
) -> Response:
    user_id = hub.redeem_ticket(ticket, task_id)
    if user_id is None:
        raise ApiError(401, "this login link was used already or has expired: ask for a new one")
    lifetime = state.config.token_lifetime

    def issue(session: Session) -> str:
        return auth.issue_token(session, user_id, lifetime, state.clock())

    token = await state.db.run(issue)
    rest = [(k, v) for k, v in parse_qsl(request.url.query) if k != TICKET_PARAM]
    location = request.url.path + (f"?{urlencode(rest)}" if rest else "")
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        path=f"/proxy/{task_id}/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


# ---- WebSockets ------------------------------------------------------------------------------


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
    state, hub = _state(websocket), hub_of(websocket)
    try:
        target = await resolve_target(state, task_id)
        user = await caller(websocket)
        tunnel = target.allocation.task_type == "SHELL"
        if not (tunnel and user is None):
            check_access(user, target.allocation)
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
            f"ws://{target.address}{_upstream_path(websocket)}",
            additional_headers=_forwarded_headers(websocket, extra, WS_HANDSHAKE_HEADERS),
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
        pumps = [asyncio.create_task(from_client()), asyncio.create_task(from_server())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(
                    asyncio.CancelledError, OSError, WebSocketDisconnect, RuntimeError
                ):
                    await pump
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

    pumps = [asyncio.create_task(from_client()), asyncio.create_task(from_upstream())]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        for pump in pumps:
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, WebSocketDisconnect, RuntimeError
            ):
                await pump
        await upstream.close()
