"""``/proxy/<task-id>/…``: the master's reverse proxy to interactive tasks on agents.

Agents sit on private addresses; every shell, notebook and TensorBoard is reached through here
(docs/design/interactive-tasks.md). HTTP bodies stream both ways; WebSockets pass frames,
subprotocols and close codes through. Only the task's owner and admins pass (bearer token or the
``auth`` cookie); a shell's WebSocket may be opened without credentials because SSH key
authentication guards what travels through it — Determined's CLI opens it that way.

Every request authenticates first: without credentials the answer is 401 before anything about
the task (its existence, its scheduling state) is said; the shell tunnel alone opens without
credentials, and only to a shell that is ready.

Browsers get in with a one-use ticket (``POST /api/v1/tasks/{id}/proxy-ticket``) that the proxy
exchanges for a ``proxy``-scope cookie: valid only under ``/proxy/<that task>/`` (checked here, not
only by the cookie's path) and refused on ``/api/v1``. Every request and frame counts as activity
for idle timeouts; an open shell tunnel (an SSH session) is activity while it is open.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from master import auth, models
from master.api.errors import ApiError, not_found
from master.api.openapi import documented
from master.api.schemas import ProxyTicket
from master.proxy_encoding import (
    BODILESS_STATUSES,
    HOP_BY_HOP,
    UndecodableReply,
    decoded,
    plan_reply,
    reply_headers,
)
from master.scheduler.state import Allocation, AllocationState
from master.state import MasterState

log = logging.getLogger(__name__)
router = APIRouter()

TICKET_PARAM = "flotilla_ticket"
TICKET_LIFETIME = timedelta(seconds=60)
UPSTREAM_CONNECT_SECONDS = 10.0
# Never forwarded to a task: the caller's master credentials.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})

Closer = Callable[[str], Awaitable[None]]


@dataclass
class _Ticket:
    user_id: int
    task_id: str
    expires_at: datetime


def _upstream_client() -> httpx.AsyncClient:
    """One client for every task's server. It must keep no cookies: a cookie one user's
    request got back would otherwise be sent with everyone's later requests. It adds no
    ``Accept-Encoding`` of its own: the upstream sees only the client's (master.proxy_encoding)."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=UPSTREAM_CONNECT_SECONDS),
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )
    del client.headers["accept-encoding"]
    return client


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


def state_of(connection: HTTPConnection) -> MasterState:
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


async def resolve_target(state: MasterState, task_id: str, caller: auth.Caller | None) -> Target:
    """Authenticate, then authorize, then find where ``task_id``'s service listens: nothing
    about the task is said to a caller without credentials (401 before anything else)."""
    if caller is None:
        raise ApiError(401, "authentication required: log in with `det user login`")
    allocation = _live_allocation(state, task_id)
    if allocation is None:
        raise await state.db.run(lambda s: _ended_task_error(s, task_id))
    check_access(caller, allocation)
    return ready_target(allocation)


def ready_target(allocation: Allocation) -> Target:
    """Where a live allocation's service listens, or 503 saying what it is doing."""
    if not allocation.is_ready or not allocation.proxy_address:
        doing = allocation.waiting_reason or {
            AllocationState.QUEUED: "waiting to be scheduled",
            AllocationState.STARTING: "starting on its agent",
            AllocationState.RUNNING: "starting its server",
        }.get(allocation.state, allocation.state.value)
        raise ApiError(503, f"task {allocation.task_id} is not ready: {doing}")
    return Target(allocation, allocation.proxy_address)


def ready_shell(state: MasterState, task_id: str) -> Target | None:
    """The target of ``task_id`` if it is a ready shell (whose tunnel opens without
    credentials: SSH keys guard it), else None."""
    allocation = _live_allocation(state, task_id)
    if (
        allocation is None
        or allocation.task_type != "SHELL"
        or not allocation.is_ready
        or not allocation.proxy_address
    ):
        return None
    return Target(allocation, allocation.proxy_address)


async def caller(connection: HTTPConnection) -> auth.Caller | None:
    """Who calls the proxy: None without credentials, 401 for a bad token. A cookie opens the
    proxy only if it is a proxy ticket's: the login session's cookie (the console's) never
    does, so a task's page cannot act as the user who opened it."""
    token, from_cookie = auth.request_credential(connection)
    if token is None:
        return None
    state = state_of(connection)

    def lookup(session: Session) -> auth.Caller | None:
        return auth.caller_for_token(session, token, state.clock())

    found = await state.db.run(lookup)
    if found is None:
        raise ApiError(401, "invalid or expired token: log in again with `det user login`")
    if from_cookie and found.scope != auth.PROXY:
        raise ApiError(
            401,
            "the proxy takes a bearer token or the cookie of a task's login link "
            "(POST /api/v1/tasks/<id>/proxy-ticket), not the console's session cookie",
        )
    return found


def check_access(caller: auth.Caller, allocation: Allocation) -> None:
    """The task's owner (a session, a task token acting as the owner, or a proxy cookie issued
    for this very task) and admins with a session pass; everyone else gets 401/403."""
    if caller.scope == auth.PROXY and caller.task_id != allocation.task_id:
        raise ApiError(401, "this login link's cookie opens another task: ask for a new link")
    if caller.report_only:
        raise ApiError(403, auth.REPORT_ONLY_REFUSAL)
    user = caller.user
    if user.username != allocation.owner and not (user.admin and caller.is_session):
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


def forwarded_headers(
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


def upstream_path(connection: HTTPConnection) -> str:
    raw = connection.scope.get("raw_path") or connection.url.path.encode()
    path = raw.decode("latin-1")
    query = connection.url.query
    return f"{path}?{query}" if query else path


# ---- HTTP ------------------------------------------------------------------------------------


@router.post("/api/v1/tasks/{task_id}/proxy-ticket", **documented(ProxyTicket, 404, 503))
async def proxy_ticket(
    task_id: str, request: Request, caller: auth.Caller = Depends(auth.current_caller)
) -> dict[str, Any]:
    """A URL that logs a browser in to ``/proxy/{task_id}/`` once, within a minute."""
    state = state_of(request)
    allocation = _live_allocation(state, task_id)
    if allocation is None:
        raise await state.db.run(lambda s: _ended_task_error(s, task_id))
    check_access(caller, allocation)
    ticket = hub_of(request).issue_ticket(caller.user.id, task_id)
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
    state, hub = state_of(request), hub_of(request)
    ticket = request.query_params.get(TICKET_PARAM)
    if ticket is not None:
        return await _redeem(state, hub, request, task_id, ticket)
    target = await resolve_target(state, task_id, await caller(request))
    extra = await upstream_headers(state, hub, task_id)
    hub.touch(task_id)
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    upstream_request = hub.http.build_request(
        request.method,
        f"http://{target.address}{upstream_path(request)}",
        headers=forwarded_headers(request, extra),
        content=request.stream() if has_body else None,
    )
    try:
        upstream = await hub.http.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        message = f"task {task_id}'s server at {target.address} did not answer: {exc}"
        raise ApiError(502, message) from exc

    try:
        plan = plan_reply(
            request.headers.getlist("accept-encoding"),
            upstream.headers.get_list("content-encoding"),
        )
    except UndecodableReply as exc:
        await upstream.aclose()
        raise ApiError(502, f"task {task_id}'s server {exc}") from exc

    async def raw() -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in upstream.aiter_raw():
                hub.touch(task_id)
                yield chunk
        finally:
            await upstream.aclose()

    has_reply_body = request.method != "HEAD" and upstream.status_code not in BODILESS_STATUSES
    body = decoded(raw(), plan.decode) if plan.decode and has_reply_body else raw()
    response = StreamingResponse(body, status_code=upstream.status_code)
    response.raw_headers = reply_headers(upstream.headers.multi_items(), plan)
    return response


async def _redeem(
    state: MasterState, hub: ProxyHub, request: Request, task_id: str, ticket: str
) -> Response:
    user_id = hub.redeem_ticket(ticket, task_id)
    if user_id is None:
        raise ApiError(401, "this login link was used already or has expired: ask for a new one")
    lifetime = state.config.token_lifetime

    def issue(session: Session) -> str:
        return auth.issue_token(session, user_id, lifetime, state.clock(), proxy_task_id=task_id)

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
