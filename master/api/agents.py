"""``/api/v1/agents`` and ``/api/v1/resource-pools``, read from the scheduler's live state.

Handlers are ``async`` so they read scheduler state on the event-loop thread, between events.
The agent list is paged (Determined's ``sortBy``, ``orderBy``, ``offset``, ``limit``) and
nothing proportional to the cluster is serialized on the event loop: the loop only picks the
page and copies what the page's agents hold; a worker thread builds the JSON.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.errors import ApiError
from master.api.openapi import documented
from master.api.paging import page, sort_order_desc
from master.api.schemas import AgentList, AgentReply, SlotReply
from master.api.wire import CONTAINER_STATES, Int64, WireModel, json_bytes, timestamp
from master.scheduler.loop import SchedulerError
from master.scheduler.state import Allocation, ConnectedAgent, SetAgentState, SetSlotState
from master.state import MasterState

router = APIRouter(prefix="/api/v1")


def device_type(slot_type: str) -> str:
    return "TYPE_CUDA" if slot_type == "cuda" else "TYPE_CPU"


def _device(slot: Any) -> dict[str, Any]:
    return {"id": slot.id, "brand": slot.brand, "uuid": slot.uuid, "type": device_type(slot.type)}


@dataclass(frozen=True)
class Held:
    """What an agent's listing shows of an allocation on it (a snapshot taken on the loop)."""

    id: str
    task_id: str
    state: str
    slot_ids: tuple[int, ...]  # its slots on this agent


def held_on(agent_id: str, allocations: Iterable[Allocation]) -> list[Held]:
    """Snapshots of the allocations placed on ``agent_id``."""
    return [
        Held(a.id, a.task_id, a.state.value, tuple(a.agent_slots[agent_id]))
        for a in allocations
        if agent_id in a.agent_slots
    ]


def _container(held: Held, devices: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": held.id,
        "parent": held.task_id,
        "state": CONTAINER_STATES.get(held.state, "STATE_STARTING"),
        "devices": [device for slot_id, device in devices.items() if slot_id in held.slot_ids],
    }


def _instances(session: Session, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = session.scalars(
        select(models.ProvisionedInstance).where(models.ProvisionedInstance.id.in_(agent_ids))
    )
    return {
        r.id: {
            "instanceType": r.instance_type,
            "market": r.market,
            "pricePerHour": r.price_per_hour,
            "zone": r.zone,
            "launchedTime": timestamp(r.launched_at),
        }
        for r in rows
    }


def slot_json(agent: ConnectedAgent, slot: Any, container: dict[str, Any] | None) -> dict[str, Any]:
    """Determined's ``v1Slot``: off when its agent or the slot itself is disabled."""
    return {
        "id": str(slot.id),
        "device": _device(slot),
        "enabled": agent.enabled and slot.id not in agent.disabled_slots,
        "draining": agent.draining,
        "container": container,
    }


def agent_json(
    agent: ConnectedAgent, held: list[Held], instance: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Determined's ``v1Agent``, from the agent and snapshots of what is placed on it (a
    listing builds thousands: plain loops, no counters)."""
    devices = {slot.id: _device(slot) for slot in agent.slots}
    containers: dict[str, dict[str, Any]] = {}
    by_slot: dict[int, dict[str, Any]] = {}
    for h in held:
        container = containers[h.id] = _container(h, devices)
        for slot_id in h.slot_ids:
            by_slot[slot_id] = container
    enabled, disabled, draining = agent.enabled, agent.disabled_slots, agent.draining
    slots = {}
    type_stats: dict[str, dict[str, int]] = {}
    brand_stats: dict[str, dict[str, int]] = {}
    for slot in agent.slots:
        device = devices[slot.id]
        on = enabled and slot.id not in disabled
        slots[f"/agents/{agent.id}/slots/{slot.id}"] = {
            "id": str(slot.id),
            "device": device,
            "enabled": on,
            "draining": draining,
            "container": by_slot.get(slot.id),
        }
        for stats, key in ((type_stats, device["type"]), (brand_stats, slot.brand)):
            counts = stats.get(key)
            if counts is None:
                counts = stats[key] = {"total": 0, "disabled": 0, "draining": 0}
            counts["total"] += 1
            counts["disabled"] += 0 if on else 1
            counts["draining"] += 1 if draining else 0
    return {
        "id": agent.id,
        "registeredTime": timestamp(agent.registered_at),
        "slots": slots,
        "containers": containers,
        "enabled": enabled,
        "draining": draining,
        "resourcePools": [agent.pool],
        "addresses": agent.addresses,
        "isolation": agent.isolation,
        "version": agent.version,
        "slotStats": {"typeStats": type_stats, "brandStats": brand_stats},
        "idleSince": timestamp(agent.idle_since),
        "instance": instance,
    }


def _state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


# Determined's GetAgentsRequest.SortBy; unspecified sorts by id here, as before paging.
AGENT_SORTS = ("SORT_BY_UNSPECIFIED", "SORT_BY_ID", "SORT_BY_TIME")


@router.get("/agents", **documented(AgentList))
async def list_agents(
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    sort_by: str = Query("SORT_BY_UNSPECIFIED", alias="sortBy"),
    order_by: str = Query("ORDER_BY_UNSPECIFIED", alias="orderBy"),
    label: str = Query("", description="Deprecated by Determined and ignored, as there."),
    _: models.User = Depends(auth.current_user),
) -> Response:
    """Determined's paging: ``limit`` 0 means every agent from ``offset``; a negative
    ``offset`` counts from the end. ``SORT_BY_TIME`` sorts by registration time."""
    if sort_by not in AGENT_SORTS:
        raise ApiError(400, f"sortBy: {sort_by!r} is not one of {list(AGENT_SORTS)}")
    descending = sort_order_desc(order_by)
    state = _state(request)
    scheduler = state.scheduler
    if sort_by == "SORT_BY_TIME":
        ordered = sorted(
            scheduler.agents.values(), key=lambda a: (a.registered_at, a.id), reverse=descending
        )
    else:
        ordered = sorted(scheduler.agents.values(), key=lambda a: a.id, reverse=descending)
    window = page(offset, limit, len(ordered))
    chosen = [_agent_copy(a) for a in ordered[window.start : window.start + window.count]]
    wanted = {a.id for a in chosen}
    # Copies, so the scheduler may go on changing its own objects while a thread reads these.
    # Only the page's agents' allocations, through the capacity index: nothing proportional
    # to the cluster on the event loop.
    held: dict[str, list[Held]] = {}
    for agent_id in wanted:
        placed = (scheduler.allocations.get(a) for a in scheduler.capacity.placed_on(agent_id))
        held[agent_id] = held_on(agent_id, (a for a in placed if a is not None))
    instances = await state.db.run(partial(_instances, agent_ids=sorted(wanted)))
    rendered = _rendered(request, scheduler.agents.keys())

    def build() -> bytes:
        parts = [rendered.render(a, held[a.id], instances.get(a.id)) for a in chosen]
        pagination = json_bytes(window.pagination)
        return b'{"agents":[' + b",".join(parts) + b'],"pagination":' + pagination + b"}"

    return Response(await asyncio.to_thread(build), media_type="application/json")


class RenderedAgents:
    """Each agent's JSON as last listed, reused while nothing it shows has changed: listing
    2,000 agents encodes only those whose state, slots, tasks or instance moved since."""

    def __init__(self) -> None:
        self._bytes: dict[str, tuple[tuple[Any, ...], bytes]] = {}

    def render(
        self, agent: ConnectedAgent, held: list[Held], instance: dict[str, Any] | None
    ) -> bytes:
        # A connection's slots, pool, addresses, version and isolation never change (a new
        # hello makes a new ConnectedAgent, with a new connected_at).
        key = (
            agent.connected_at,
            agent.registered_at,
            agent.enabled,
            agent.draining,
            agent.idle_since,
            frozenset(agent.disabled_slots),
            tuple(held),
            None if instance is None else tuple(instance.items()),
        )
        found = self._bytes.get(agent.id)
        if found is not None and found[0] == key:
            return found[1]
        data = json_bytes(agent_json(agent, held, instance))
        self._bytes[agent.id] = (key, data)
        return data

    def keep_only(self, agent_ids: Iterable[str]) -> None:
        kept = set(agent_ids)
        for agent_id in [a for a in self._bytes if a not in kept]:
            self._bytes.pop(agent_id, None)

    def __len__(self) -> int:
        return len(self._bytes)


def _rendered(request: Request, connected: Iterable[str]) -> RenderedAgents:
    """The app's cache, rid of agents gone once it holds many more than are connected."""
    cache: RenderedAgents | None = getattr(request.app.state, "rendered_agents", None)
    if cache is None:
        cache = request.app.state.rendered_agents = RenderedAgents()
    connected = list(connected)
    if len(cache) > 2 * len(connected) + 100:
        cache.keep_only(connected)
    return cache


def _agent_copy(agent: ConnectedAgent) -> ConnectedAgent:
    duplicate = copy.copy(agent)
    duplicate.disabled_slots = set(agent.disabled_slots)
    return duplicate


@router.get("/agents/{agent_id}", **documented(AgentReply, 404))
async def get_agent(
    agent_id: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = _state(request)
    agent = state.scheduler.agents.get(agent_id)
    if agent is None:
        raise ApiError(404, f"agent '{agent_id}' not found (or not connected)")
    instances = await state.db.run(partial(_instances, agent_ids=[agent_id]))
    held = held_on(agent_id, state.scheduler.allocations.values())
    return {"agent": agent_json(agent, held, instances.get(agent_id))}


class DisableRequest(WireModel):
    agent_id: str | None = None
    drain: bool = False


async def _set(request: Request, event: SetAgentState) -> dict[str, Any]:
    scheduler = _state(request).scheduler
    try:
        agent = await scheduler.call(event)
    except SchedulerError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return {"agent": agent_json(agent, held_on(agent.id, scheduler.allocations.values()))}


@router.post("/agents/{agent_id}/enable", **documented(AgentReply, 404))
async def enable_agent(
    agent_id: str, request: Request, _: models.User = Depends(auth.admin_user)
) -> dict[str, Any]:
    return await _set(request, SetAgentState(agent_id=agent_id, enabled=True))


@router.post("/agents/{agent_id}/disable", **documented(AgentReply, 404))
async def disable_agent(
    agent_id: str,
    request: Request,
    body: DisableRequest | None = Body(default=None),
    _: models.User = Depends(auth.admin_user),
) -> dict[str, Any]:
    drain = body.drain if body is not None else False
    return await _set(request, SetAgentState(agent_id=agent_id, enabled=False, drain=drain))


class DisableSlotRequest(WireModel):
    agent_id: str | None = None
    slot_id: int | None = None
    drain: bool = False


async def _set_slot(request: Request, event: SetSlotState) -> dict[str, Any]:
    scheduler = _state(request).scheduler
    try:
        agent = await scheduler.call(event)
    except SchedulerError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    slot = next(s for s in agent.slots if s.id == event.slot_id)
    held = held_on(agent.id, scheduler.allocations.values())
    holder = next((h for h in held if event.slot_id in h.slot_ids), None)
    devices = {s.id: _device(s) for s in agent.slots}
    return {"slot": slot_json(agent, slot, _container(holder, devices) if holder else None)}


@router.post("/agents/{agent_id}/slots/{slot_id}/enable", **documented(SlotReply, 404))
async def enable_slot(
    agent_id: str, slot_id: int, request: Request, _: models.User = Depends(auth.admin_user)
) -> dict[str, Any]:
    return await _set_slot(request, SetSlotState(agent_id=agent_id, slot_id=slot_id, enabled=True))


@router.post("/agents/{agent_id}/slots/{slot_id}/disable", **documented(SlotReply, 404))
async def disable_slot(
    agent_id: str,
    slot_id: int,
    request: Request,
    body: DisableSlotRequest | None = Body(default=None),
    _: models.User = Depends(auth.admin_user),
) -> dict[str, Any]:
    drain = body.drain if body is not None else False
    event = SetSlotState(agent_id=agent_id, slot_id=slot_id, enabled=False, drain=drain)
    return await _set_slot(request, event)
