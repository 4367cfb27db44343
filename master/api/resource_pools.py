"""``GET /api/v1/resource-pools``: each pool's agents and slots, and for provisioned pools the
instances, pending demand, status and backoffs — why the fleet is the size it is."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.agents import device_type
from master.api.errors import not_found
from master.api.openapi import documented
from master.api.schemas import PoolEvents, ResourcePoolList
from master.api.wire import pagination, timestamp
from master.config import ResourcePoolConfig
from master.scheduler.state import AllocationState
from master.state import MasterState
from provisioner.config import ProviderConfig, SpotFallbackPolicy
from provisioner.gcp_prices import GCPPriceBook
from provisioner.loop import PoolLoop
from provisioner.prices import load_shipped_table

router = APIRouter(prefix="/api/v1")
POOL_TYPES = {
    None: "RESOURCE_POOL_TYPE_STATIC",
    "local": "RESOURCE_POOL_TYPE_STATIC",
    "aws": "RESOURCE_POOL_TYPE_AWS",
    "gcp": "RESOURCE_POOL_TYPE_GCP",
}


def _limits(provider: ProviderConfig) -> dict[str, Any]:
    """The pool's size limits and market, as configured."""
    period = provider.max_idle_agent_period
    spot = provider.spot and provider.spot_fallback.policy != SpotFallbackPolicy.ON_DEMAND
    return {
        "minInstances": provider.min_instances,
        "maxInstances": provider.max_instances,
        "maxIdleAgentPeriod": period.total_seconds() if isinstance(period, timedelta) else None,
        "idleRule": "fixed" if isinstance(period, timedelta) else period or "off",
        "maxCostPerHour": provider.max_cost_per_hour,
        "market": "spot" if spot else "on-demand",
    }


def _fallback(loop: PoolLoop, now: datetime) -> dict[str, Any]:
    """Whether a spot pool buys on-demand now because spot has been unavailable for
    ``spot_fallback.delay``, and why (the provisioning status says which offers failed)."""
    config = loop.config
    since = loop.spot_unavailable_since
    if since is None or not config.spot:
        return {"active": False, "reason": None}
    if config.spot_fallback.policy != SpotFallbackPolicy.SPOT_THEN_ON_DEMAND:
        return {"active": False, "reason": f"spot unavailable since {timestamp(since)} (spot_only)"}
    switch = since + config.spot_fallback.delay
    if now < switch:
        reason = f"spot unavailable since {timestamp(since)}; on-demand from {timestamp(switch)}"
        return {"active": False, "reason": reason}
    return {
        "active": True,
        "reason": f"spot unavailable since {timestamp(since)}: {loop.status.summary}",
    }


@functools.cache
def _gpu_types() -> frozenset[str]:
    """The instance types the shipped price table lists with a GPU."""
    return frozenset(name for name, info in load_shipped_table().types.items() if info.gpu)


def slot_type(pool: ResourcePoolConfig, agents_slot_types: set[str]) -> str:
    """The pool's slot type: its agents' one type; for an elastic pool without agents, what its
    instances will bring (an AWS type with a GPU in the price table, or a GCP one with GPUs
    attached or bundled: CUDA; other types and ``local`` instances, which offer CPU slots:
    CPU). ``TYPE_UNSPECIFIED`` only for a static pool without agents or agents of mixed types."""
    if agents_slot_types:
        return agents_slot_types.pop() if len(agents_slot_types) == 1 else "TYPE_UNSPECIFIED"
    provider = pool.provider
    if provider is None:
        return "TYPE_UNSPECIFIED"
    if provider.type == "aws" and provider.instance_type in _gpu_types():
        return "TYPE_CUDA"
    if provider.type == "gcp" and GCPPriceBook().gpus(provider.instance_type) > 0:
        return "TYPE_CUDA"
    return "TYPE_CPU"


def _provisioning(state: MasterState, pool: ResourcePoolConfig) -> dict[str, Any] | None:
    if pool.provider is None or state.provisioning is None:
        return None
    loop = state.provisioning.loops.get(pool.pool_name)
    if loop is None:
        failure = state.provisioning.failed.get(pool.pool_name, "provider not started")
        return {
            "provider": pool.provider.type,
            "instanceType": pool.provider.instance_type_name,
            "spot": pool.provider.spot,
            **_limits(pool.provider),
            "fallback": {"active": False, "reason": None},
            "spendPerHour": 0.0,
            "status": failure,
            "degraded": failure,
            "pendingSlots": 0,
            "lastPass": None,
            "instances": [],
            "backoffs": [],
        }
    status = loop.status
    return {
        "provider": pool.provider.type,
        "instanceType": pool.provider.instance_type_name,
        "spot": pool.provider.spot,
        **_limits(pool.provider),
        "fallback": _fallback(loop, state.clock()),
        "spendPerHour": round(
            sum(i.price_per_hour for i in status.instances if i.state.value != "terminated"), 4
        ),
        "status": status.summary,
        "degraded": status.degraded,
        "pendingSlots": status.pending_slots,
        "lastPass": timestamp(status.last_pass),
        "instances": [
            {
                "id": i.id,
                "instanceType": i.instance_type,
                "zone": i.zone,
                "market": i.market.value,
                "pricePerHour": i.price_per_hour,
                "slots": i.slots,
                "state": i.state.value,
                "launchedTime": timestamp(i.launched_at),
            }
            for i in status.instances
        ],
        "backoffs": [
            {
                "offer": str(b.key),
                "until": timestamp(b.until),
                "failures": b.failures,
                "reason": b.reason,
            }
            for b in status.backoffs
        ],
    }


@router.get("/resource-pools", **documented(ResourcePoolList))
async def list_resource_pools(
    request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state: MasterState = request.app.state.master
    scheduler = state.scheduler
    pools = []
    for pool in state.config.resource_pools:
        name = pool.pool_name
        agents = [a for a in scheduler.agents.values() if a.pool == name]
        allocations = [a for a in scheduler.allocations.values() if a.pool == name]
        total = sum(len(a.slots) for a in agents)
        used = sum(len(a.slots) - len(scheduler.free_slots(a)) for a in agents)
        queued = sum(1 for a in allocations if a.state == AllocationState.QUEUED)
        slot_types = {device_type(s.type) for a in agents for s in a.slots}
        provider = pool.provider
        pools.append(
            {
                "name": name,
                "description": pool.description,
                "type": POOL_TYPES[provider.type if provider else None],
                "numAgents": len(agents),
                "slotsAvailable": total,
                "slotsUsed": used,
                "slotType": slot_type(pool, slot_types),
                "defaultComputePool": name == state.config.default_resource_pool,
                "defaultAuxPool": name == state.config.aux_resource_pool,
                "schedulerType": "SCHEDULER_TYPE_PRIORITY",
                "schedulerFittingPolicy": "FITTING_POLICY_BEST",
                "minAgents": provider.min_instances if provider else len(agents),
                "maxAgents": provider.max_instances if provider else len(agents),
                "slotsPerAgent": max((len(a.slots) for a in agents), default=0),
                "instanceType": provider.instance_type_name if provider else "",
                "auxContainerCapacity": 0,
                "auxContainersRunning": 0,
                "stats": {"queuedCount": queued, "scheduledCount": len(allocations) - queued},
                "provisioning": _provisioning(state, pool),
            }
        )
    return {"resourcePools": pools, "pagination": pagination(0, 0, len(pools))}


@router.get("/resource-pools/{pool}/events", **documented(PoolEvents, 404))
async def pool_events(
    pool: str,
    request: Request,
    limit: int = Query(50, ge=1, le=1000),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """The pool's instance events, newest first: launches, joins, drains, terminations and
    launch failures, each with its reason."""
    state: MasterState = request.app.state.master
    if pool not in {p.pool_name for p in state.config.resource_pools}:
        raise not_found(f"resource pool '{pool}'")

    def read(session: Session) -> list[dict[str, Any]]:
        rows = session.scalars(
            select(models.InstanceEvent)
            .where(models.InstanceEvent.resource_pool == pool)
            .order_by(models.InstanceEvent.id.desc())
            .limit(limit)
        )
        return [
            {
                "time": timestamp(r.at),
                "instanceId": r.instance_id,
                "kind": r.kind,
                "reason": r.reason,
            }
            for r in rows
        ]

    return {"events": await state.db.run(read)}
