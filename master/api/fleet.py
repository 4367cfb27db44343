"""The fleet for the console: ``GET /api/v1/instances`` (admin), ``GET /api/v1/queue`` and
``GET /api/v1/scale-events`` (admin) — what every instance costs and why it exists, what waits
and why, and the provisioner's decisions over time.

An instance's state joins two records: the provisioner's row in ``instances`` (launched,
joined, terminated, with the reasons) and the scheduler's live agent of the same id (idle since
when, draining, what runs on it). Both are read here as they are now; nothing is cached.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.console_schemas import InstanceList, Queue, ScaleEventList
from master.api.errors import bad_request, not_found
from master.api.openapi import documented
from master.api.queue_reasons import PoolView, WaitingJob, queue_reasons
from master.api.wire import timestamp
from master.cost import SECONDS_PER_HOUR
from master.scheduler.state import Allocation, AllocationState, ConnectedAgent
from master.state import MasterState
from provisioner.types import InstanceState

router = APIRouter(prefix="/api/v1")

DEFAULT_ENDED_WITHIN = 86_400  # seconds: instances ended in the last day are listed too
JOB_TYPES = {"TRIAL": "EXPERIMENT"}  # every other task type is its own job type


def _known_pool(state: MasterState, pool: str | None) -> None:
    if pool is not None and pool not in {p.pool_name for p in state.config.resource_pools}:
        raise not_found(f"resource pool '{pool}'")


# ---- instances -----------------------------------------------------------------------------------


def instance_state(
    row: models.ProvisionedInstance, agent: ConnectedAgent | None, running: bool = False
) -> str:
    """starting (launched, its agent never joined), idle, busy (an allocation runs there),
    draining (its agent is disabled or draining), disconnected (its agent joined once and is
    gone now), terminating, terminated."""
    if row.terminated_at is not None or row.state == InstanceState.TERMINATED.value:
        return "terminated"
    if row.state == InstanceState.TERMINATING.value:
        return "terminating"
    if agent is None:
        return "starting" if row.joined_at is None else "disconnected"
    if agent.draining or not agent.enabled:
        return "draining"
    # By what runs there (the same source as the instance's ``allocations``), not by the agent's
    # idle_since, which a just-joined agent may not have yet.
    return "busy" if running else "idle"


def _instance_rows(
    session: Session, pool: str | None, ended_after: datetime
) -> list[models.ProvisionedInstance]:
    query = select(models.ProvisionedInstance).where(
        or_(
            models.ProvisionedInstance.terminated_at.is_(None),
            models.ProvisionedInstance.terminated_at >= ended_after,
        )
    )
    if pool is not None:
        query = query.where(models.ProvisionedInstance.resource_pool == pool)
    return list(session.scalars(query))


@router.get("/instances", **documented(InstanceList, 404))
async def list_instances(
    request: Request,
    pool: str | None = None,
    ended_within: int = Query(
        DEFAULT_ENDED_WITHIN,
        alias="endedWithin",
        ge=0,
        le=366 * 86_400,
        description="seconds: also list instances terminated this recently",
    ),
    _: models.User = Depends(auth.admin_user),
) -> dict[str, Any]:
    """Every provisioned instance alive (oldest first), then those ended within
    ``endedWithin`` seconds (latest ended first), each with its cost so far and why it was
    launched; idle ones with the time their pool's ``max_idle_agent_period`` ends it."""
    state: MasterState = request.app.state.master
    _known_pool(state, pool)
    now = state.clock()
    rows = await state.db.run(
        partial(_instance_rows, pool=pool, ended_after=now - timedelta(seconds=ended_within))
    )
    # Read on the event loop, between the scheduler's events.
    agents = dict(state.scheduler.agents)
    running: dict[str, list[str]] = {}
    for allocation in state.scheduler.allocations.values():
        if allocation.state != AllocationState.QUEUED:
            for agent_id in allocation.agent_slots:
                running.setdefault(agent_id, []).append(allocation.task_id)
    idle_periods = {
        p.pool_name: p.provider.max_idle_agent_period
        for p in state.config.resource_pools
        if p.provider is not None
    }
    rows.sort(
        key=lambda r: (
            r.terminated_at is not None,
            -r.terminated_at.timestamp() if r.terminated_at else 0.0,
            r.launched_at,
            r.id,
        )
    )
    instances = []
    for row in rows:
        agent = agents.get(row.id)
        current = instance_state(row, agent, running=bool(running.get(row.id)))
        end = row.terminated_at or now
        uptime = max((end - row.launched_at).total_seconds(), 0.0)
        idle_since = agent.idle_since if agent is not None and current == "idle" else None
        period = idle_periods.get(row.resource_pool)
        fixed = period if isinstance(period, timedelta) else None  # auto has no fixed deadline
        deadline = idle_since + fixed if idle_since is not None and fixed else None
        instances.append(
            {
                "id": row.id,
                "resourcePool": row.resource_pool,
                "provider": row.provider,
                "instanceType": row.instance_type,
                "zone": row.zone,
                "market": row.market,
                "pricePerHour": row.price_per_hour,
                "slots": row.slots,
                "state": current,
                "launchedTime": timestamp(row.launched_at),
                # The provisioner records the join on its next pass; the agent knows it now.
                "joinedTime": timestamp(
                    row.joined_at or (agent.connected_at if agent is not None else None)
                ),
                "terminatedTime": timestamp(row.terminated_at),
                "uptimeSeconds": round(uptime, 3),
                "costUsd": round(row.price_per_hour * uptime / SECONDS_PER_HOUR, 6),
                "agentId": row.id if row.joined_at is not None or agent is not None else None,
                "idleSince": timestamp(idle_since),
                "idleDeadline": timestamp(deadline),
                "launchReason": row.launch_reason,
                "terminationReason": row.termination_reason,
                "allocations": sorted(running.get(row.id, [])) if current != "terminated" else [],
            }
        )
    return {"now": timestamp(now), "instances": instances}


# ---- queue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TaskInfo:
    name: str
    queued_at: datetime | None


def _task_names(session: Session, task_ids: list[str]) -> dict[str, _TaskInfo]:
    """What to call each task: its experiment and trial for a trial, else its description."""
    if not task_ids:
        return {}
    tasks = session.scalars(select(models.Task).where(models.Task.id.in_(task_ids))).all()
    trial_ids = {
        int(t.config["trial_id"]) for t in tasks if isinstance(t.config.get("trial_id"), int)
    }
    experiments = dict(
        session.execute(
            select(models.Trial.id, models.Experiment.name)
            .join(models.Experiment, models.Experiment.id == models.Trial.experiment_id)
            .where(models.Trial.id.in_(trial_ids))
        ).all()
    )
    found = {}
    for task in tasks:
        trial_id = task.config.get("trial_id")
        if isinstance(trial_id, int) and trial_id in experiments:
            name = f"{experiments[trial_id]} (trial {trial_id})"
        else:
            name = task.description or task.id
        found[task.id] = _TaskInfo(name, task.created_at)
    return found


def _pool_views(state: MasterState) -> dict[str, PoolView]:
    """Each pool as the queue's reasons need it (read on the event loop)."""
    scheduler = state.scheduler
    loops = state.provisioning.loops if state.provisioning is not None else {}
    failed = state.provisioning.failed if state.provisioning is not None else {}
    views = {}
    for pool in state.config.resource_pools:
        name = pool.pool_name
        agents = [a for a in scheduler.agents.values() if a.pool == name]
        free = [len(scheduler.free_slots(a)) for a in agents if a.enabled and not a.draining]
        provider = pool.provider
        loop = loops.get(name)
        status = loop.status if loop is not None else None
        alive = [
            i
            for i in (status.instances if status is not None else [])
            if i.state in (InstanceState.PENDING, InstanceState.RUNNING)
        ]
        joined = {a.id for a in agents}
        starting = [i for i in alive if i.id not in joined]
        markets = sorted({i.market.value for i in starting})
        backoffs = status.backoffs if status is not None else []
        views[name] = PoolView(
            name=name,
            provisioned=provider is not None,
            agents=len(agents),
            most_free_on_one_agent=max(free, default=0),
            free_slots=sum(free),
            instance_type=provider.instance_type_name if provider else "",
            starting=len(starting),
            starting_market=markets[0] if len(markets) == 1 else "",
            starting_slots=tuple(i.slots for i in starting),
            alive=len(alive),
            max_instances=provider.max_instances if provider else 0,
            degraded=(status.degraded if status is not None else failed.get(name)),
            backoff=backoffs[0].reason if backoffs else None,
        )
    return views


@router.get("/queue", **documented(Queue, 404))
async def queue(
    request: Request, pool: str | None = None, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """Every waiting job in the order the scheduler will consider it, with why it waits. Async,
    so the scheduler's memory is read on the event loop it lives on."""
    state: MasterState = request.app.state.master
    _known_pool(state, pool)
    scheduler = state.scheduler
    now = state.clock()
    allocations = list(scheduler.allocations.values())
    waiting = [a for a in allocations if a.state == AllocationState.QUEUED]
    usage: Counter[str] = Counter()
    for allocation in allocations:
        if allocation.state != AllocationState.QUEUED:
            usage[allocation.owner] += allocation.slots
    # The scheduler's own order (master.scheduler.fit): priority, then the owner holding the
    # fewest slots, then the earliest submitted.
    waiting.sort(key=lambda a: (a.priority, usage[a.owner], a.submitted_at, a.id))
    pools = _pool_views(state)
    names = await state.db.run(partial(_task_names, task_ids=[a.task_id for a in waiting]))
    # Reasons are decided per pool, over its jobs in queue order: instances that are starting
    # are for the first jobs that fit on them, not for every job of the pool.
    by_pool: dict[str, list[Allocation]] = {}
    for allocation in waiting:
        by_pool.setdefault(allocation.pool, []).append(allocation)
    reasons: dict[str, str] = {}
    for pool_name, pool_jobs in by_pool.items():
        said = queue_reasons(
            [
                WaitingJob(
                    a.slots,
                    sum(1 for other in pool_jobs if other.priority < a.priority),
                    a.waiting_reason,
                )
                for a in pool_jobs
            ],
            pools.get(pool_name),
        )
        reasons.update((a.id, r) for a, r in zip(pool_jobs, said, strict=True))
    jobs: list[dict[str, Any]] = []
    for allocation in waiting:
        if pool is not None and allocation.pool != pool:
            continue
        info = names.get(allocation.task_id, _TaskInfo(allocation.task_id, None))
        reason = reasons[allocation.id]
        jobs.append(
            {
                "position": len(jobs) + 1,
                "taskId": allocation.task_id,
                "allocationId": allocation.id,
                "type": JOB_TYPES.get(allocation.task_type, allocation.task_type),
                "name": info.name,
                "username": allocation.owner,
                "priority": allocation.priority,
                "slots": allocation.slots,
                "resourcePool": allocation.pool,
                "queuedTime": timestamp(allocation.submitted_at),
                "waitingSeconds": round(
                    max((now - allocation.submitted_at).total_seconds(), 0.0), 3
                ),
                "reason": reason,
            }
        )
    return {"jobs": jobs}


# ---- scale events --------------------------------------------------------------------------------


@router.get("/scale-events", **documented(ScaleEventList, 404))
async def scale_events(
    request: Request,
    pool: str | None = None,
    kind: str | None = Query(None, description="e.g. requested, joined, draining, terminated"),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(200, ge=1, le=5000),
    _: models.User = Depends(auth.admin_user),
) -> dict[str, Any]:
    """The provisioner's decisions, newest first: each launch, join, drain, termination,
    failed launch (``launch_failed:<class>``) and adoption, with its reason. ``kind`` matches
    a kind exactly or, ending in ``:``, every kind with that prefix."""
    state: MasterState = request.app.state.master
    _known_pool(state, pool)
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise bad_request(f"{name}: give a time zone, e.g. 2026-01-01T00:00:00Z")
    if since is not None and until is not None and since >= until:
        raise bad_request("since: must be before until")

    def read(session: Session) -> list[dict[str, Any]]:
        table = models.InstanceEvent
        query = select(table)
        if pool is not None:
            query = query.where(table.resource_pool == pool)
        if kind:
            match = table.kind.startswith(kind, autoescape=True)
            query = query.where(match if kind.endswith(":") else table.kind == kind)
        if since is not None:
            query = query.where(table.at >= since)
        if until is not None:
            query = query.where(table.at < until)
        rows = session.scalars(query.order_by(table.at.desc(), table.id.desc()).limit(limit))
        return [
            {
                "id": r.id,
                "time": timestamp(r.at),
                "resourcePool": r.resource_pool,
                "instanceId": r.instance_id,
                "kind": r.kind,
                "reason": r.reason,
            }
            for r in rows
        ]

    return {"events": await state.db.run(read)}
