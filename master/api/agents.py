"""``/api/v1/agents`` and ``/api/v1/resource-pools``, read from the scheduler's live state.

Handlers are ``async`` so they read scheduler state on the event-loop thread, between events.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Body, Depends, Request

from master import auth, models
from master.api.errors import ApiError
from master.api.wire import CONTAINER_STATES, WireModel, pagination, timestamp
from master.scheduler.loop import SchedulerError
from master.scheduler.state import Allocation, AllocationState, ConnectedAgent, SetAgentState
from master.state import MasterState

router = APIRouter(prefix="/api/v1")


def device_type(slot_type: str) -> str:
    return "TYPE_CUDA" if slot_type == "cuda" else "TYPE_CPU"


def _device(slot: Any) -> dict[str, Any]:
    return {"id": slot.id, "brand": slot.brand, "uuid": slot.uuid, "type": device_type(slot.type)}


def _container(allocation: Allocation, agent: ConnectedAgent) -> dict[str, Any]:
    ids = allocation.agent_slots.get(agent.id, [])
    return {
        "id": allocation.id,
        "parent": allocation.task_id,
        "state": CONTAINER_STATES.get(allocation.state.value, "STATE_STARTING"),
        "devices": [_device(s) for s in agent.slots if s.id in ids],
    }


def agent_json(agent: ConnectedAgent, allocations: list[Allocation]) -> dict[str, Any]:
    here = [a for a in allocations if agent.id in a.agent_slots]
    containers = {a.id: _container(a, agent) for a in here}
    by_slot = {s: a for a in here for s in a.agent_slots[agent.id]}
    slots = {}
    type_stats: dict[str, Counter[str]] = {}
    brand_stats: dict[str, Counter[str]] = {}
    for slot in agent.slots:
        holder = by_slot.get(slot.id)
        slots[f"/agents/{agent.id}/slots/{slot.id}"] = {
            "id": str(slot.id),
            "device": _device(slot),
            "enabled": agent.enabled,
            "draining": agent.draining,
            "container": containers[holder.id] if holder else None,
        }
        for stats, key in ((type_stats, device_type(slot.type)), (brand_stats, slot.brand)):
            counter = stats.setdefault(key, Counter())
            counter["total"] += 1
            counter["disabled"] += 0 if agent.enabled else 1
            counter["draining"] += 1 if agent.draining else 0
    return {
        "id": agent.id,
        "registeredTime": timestamp(agent.registered_at),
        "slots": slots,
        "containers": containers,
        "enabled": agent.enabled,
        "draining": agent.draining,
        "resourcePools": [agent.pool],
        "addresses": agent.addresses,
        "version": agent.version,
        "slotStats": {
            "typeStats": {k: dict(v) for k, v in type_stats.items()},
            "brandStats": {k: dict(v) for k, v in brand_stats.items()},
        },
    }


def _state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


@router.get("/agents")
async def list_agents(
    request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    scheduler = _state(request).scheduler
    allocations = list(scheduler.allocations.values())
    agents = [
        agent_json(a, allocations) for a in sorted(scheduler.agents.values(), key=lambda a: a.id)
    ]
    return {"agents": agents, "pagination": pagination(0, 0, len(agents))}


@router.get("/agents/{agent_id}")
async def get_agent(
    agent_id: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    scheduler = _state(request).scheduler
    agent = scheduler.agents.get(agent_id)
    if agent is None:
        raise ApiError(404, f"agent '{agent_id}' not found (or not connected)")
    return {"agent": agent_json(agent, list(scheduler.allocations.values()))}


class DisableRequest(WireModel):
    agent_id: str | None = None
    drain: bool = False


async def _set(request: Request, event: SetAgentState) -> dict[str, Any]:
    scheduler = _state(request).scheduler
    try:
        agent = await scheduler.call(event)
    except SchedulerError as exc:
        raise ApiError(exc.status, str(exc)) from exc
    return {"agent": agent_json(agent, list(scheduler.allocations.values()))}


@router.post("/agents/{agent_id}/enable")
async def enable_agent(
    agent_id: str, request: Request, _: models.User = Depends(auth.admin_user)
) -> dict[str, Any]:
    return await _set(request, SetAgentState(agent_id=agent_id, enabled=True))


@router.post("/agents/{agent_id}/disable")
async def disable_agent(
    agent_id: str,
    request: Request,
    body: DisableRequest | None = Body(default=None),
    _: models.User = Depends(auth.admin_user),
) -> dict[str, Any]:
    drain = body.drain if body is not None else False
    return await _set(request, SetAgentState(agent_id=agent_id, enabled=False, drain=drain))


@router.get("/resource-pools")
async def list_resource_pools(
    request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = _state(request)
    scheduler = state.scheduler
    pools = []
    for pool in state.config.resource_pools:
        agents = [a for a in scheduler.agents.values() if a.pool == pool.pool_name]
        total = sum(len(a.slots) for a in agents)
        used = sum(len(a.slots) - len(scheduler.free_slots(a)) for a in agents)
        queued = [
            a
            for a in scheduler.allocations.values()
            if a.pool == pool.pool_name and a.state == AllocationState.QUEUED
        ]
        slot_types = {device_type(s.type) for a in agents for s in a.slots}
        pools.append(
            {
                "name": pool.pool_name,
                "description": pool.description,
                "type": "RESOURCE_POOL_TYPE_STATIC",
                "numAgents": len(agents),
                "slotsAvailable": total,
                "slotsUsed": used,
                "slotType": slot_types.pop() if len(slot_types) == 1 else "TYPE_UNSPECIFIED",
                "defaultComputePool": pool.pool_name == state.config.default_resource_pool,
                "defaultAuxPool": pool.pool_name == state.config.default_resource_pool,
                "schedulerType": "SCHEDULER_TYPE_PRIORITY",
                "schedulerFittingPolicy": "FITTING_POLICY_BEST",
                "minAgents": 0,
                "maxAgents": len(agents),
                "slotsPerAgent": max((len(a.slots) for a in agents), default=0),
                "auxContainerCapacity": 0,
                "auxContainersRunning": 0,
                "stats": {
                    "queuedCount": len(queued),
                    "scheduledCount": len(
                        [
                            a
                            for a in scheduler.allocations.values()
                            if a.pool == pool.pool_name and a.state != AllocationState.QUEUED
                        ]
                    ),
                },
            }
        )
    return {"resourcePools": pools, "pagination": pagination(0, 0, len(pools))}
