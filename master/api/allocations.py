"""``/api/v1/allocations/{id}/…``: what a running task tells the master about itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from sqlalchemy.orm import Session

from master import auth
from master.api.errors import ApiError
from master.api.openapi import documented
from master.api.schemas import Empty, RendezvousView
from master.api.wire import WireModel
from master.rendezvous import Arrival, Rendezvous, RendezvousError
from master.scheduler.state import AllocationReady, SchedulerError
from master.state import MasterState

router = APIRouter(prefix="/api/v1/allocations")

# Longest a single rendezvous post is held open waiting for the other agents; the launcher
# posts again.
MAX_RENDEZVOUS_WAIT_SECONDS = 60


class ReadyRequest(WireModel):
    # Ignored: the master proxies to the agent's own address (as its connection shows), never
    # to one a task names. Accepted so that older harnesses keep working.
    proxy_address: str | None = None
    proxy_port: int | None = None


async def require_task_token(request: Request, allocation_id: str) -> None:
    """Only the allocation's own token may speak for it (not even its owner's login)."""
    state: MasterState = request.app.state.master
    token = auth.request_token(request)
    if token is None:
        raise ApiError(401, "authentication required: this call takes the task's own token")

    def lookup(session: Session) -> str | None:
        return auth.allocation_of_token(session, token, state.clock())

    if await state.db.run(lookup) != allocation_id:
        raise ApiError(403, f"only allocation {allocation_id}'s own token may report for it")


@router.post("/{allocation_id}/ready", **documented(Empty, 404, 409))
async def allocation_ready(
    allocation_id: str, request: Request, body: ReadyRequest | None = None
) -> dict[str, object]:
    """The task's service answers on ``proxyPort`` of its agent; the proxy may forward to it
    from now on. Once per allocation (409 after); ``proxyAddress`` is ignored: the host is the
    agent's own address, known from its connection."""
    await require_task_token(request, allocation_id)
    body = body or ReadyRequest()
    if body.proxy_port is not None and not 0 < body.proxy_port < 65536:
        raise ApiError(400, f"proxyPort: {body.proxy_port} is not a port (1–65535)")
    state: MasterState = request.app.state.master
    try:
        await state.scheduler.call(AllocationReady(allocation_id, body.proxy_port))
    except SchedulerError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return {}


class RendezvousRequest(WireModel):
    agent_id: str = Field(min_length=1)
    address: str = Field(min_length=1)
    slots: int = Field(ge=1)
    port: int | None = Field(default=None, ge=1, le=65535)


@router.post("/{allocation_id}/rendezvous", **documented(RendezvousView, 404))
async def allocation_rendezvous(
    allocation_id: str,
    body: RendezvousRequest,
    request: Request,
    timeout_seconds: int = Query(0, alias="timeoutSeconds", ge=0),
) -> dict[str, Any]:
    """One agent of a multi-agent allocation is here (see ``master.rendezvous``); the answer
    waits up to ``timeoutSeconds`` (at most 60) for the others."""
    await require_task_token(request, allocation_id)
    rendezvous: Rendezvous = request.app.state.rendezvous
    arrival = Arrival(body.agent_id, body.address, body.slots, body.port)
    try:
        view = rendezvous.arrive(allocation_id, arrival)
        if not view.ready:
            wait = min(timeout_seconds, MAX_RENDEZVOUS_WAIT_SECONDS)
            view = await rendezvous.wait(allocation_id, wait)
    except RendezvousError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return view.to_json()
