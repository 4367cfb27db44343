"""``GET /api/v1/cost``: what the fleet cost over a time range, by pool, user, task, instance.

Flotilla's own endpoint (Determined has none). Instance hours come from the provisioner's
records; allocations are charged by slot-seconds on the instances they ran on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.errors import bad_request
from master.api.openapi import documented
from master.api.schemas import CostReport
from master.api.wire import timestamp
from master.cost import AllocationSpan, CostLine, InstanceSpan, cost_report
from master.state import MasterState

router = APIRouter(prefix="/api/v1")
DEFAULT_WINDOW = timedelta(days=1)
GroupBy = Literal["pool", "user", "task", "instance"]


def _spans(
    session: Session, since: datetime, until: datetime
) -> tuple[list[InstanceSpan], list[AllocationSpan]]:
    instance_rows = session.scalars(
        select(models.ProvisionedInstance).where(
            models.ProvisionedInstance.launched_at < until,
            or_(
                models.ProvisionedInstance.terminated_at.is_(None),
                models.ProvisionedInstance.terminated_at > since,
            ),
        )
    )
    instances = [
        InstanceSpan(
            r.id, r.resource_pool, r.price_per_hour, r.slots, r.launched_at, r.terminated_at
        )
        for r in instance_rows
    ]
    allocation_rows = session.execute(
        select(models.Allocation, models.Task, models.User.username)
        .join(models.Task, models.Task.id == models.Allocation.task_id)
        .join(models.User, models.User.id == models.Task.owner_id)
        .where(
            models.Allocation.started_at.is_not(None),
            models.Allocation.started_at < until,
            or_(models.Allocation.ended_at.is_(None), models.Allocation.ended_at > since),
        )
    )
    allocations = []
    for row, task, username in allocation_rows:
        assert row.started_at is not None
        allocations.append(
            AllocationSpan(
                row.id,
                username,
                task.resource_pool,
                task.id,
                {agent: len(slots) for agent, slots in (row.agent_slots or {}).items()},
                row.started_at,
                row.ended_at,
            )
        )
    return instances, allocations


def _lines(lines: dict[str, CostLine]) -> list[dict[str, Any]]:
    return [
        {"key": line.key, "usd": round(line.usd, 6), "slotHours": round(line.slot_hours, 6)}
        for line in sorted(lines.values(), key=lambda line: -line.usd)
    ]


@router.get("/cost", **documented(CostReport))
async def get_cost(
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: GroupBy = Query("pool", alias="groupBy"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    state: MasterState = request.app.state.master
    until = until or state.clock()
    since = since or until - DEFAULT_WINDOW
    if since.tzinfo is None or until.tzinfo is None:
        raise bad_request("since, until: give a time zone, e.g. 2026-01-01T00:00:00Z")
    if since >= until:
        raise bad_request("since: must be before until")
    instances, allocations = await state.db.run(lambda s: _spans(s, since, until))
    report = cost_report(instances, allocations, since, until)
    groups = {
        "pool": report.by_pool,
        "user": report.by_user,
        "task": report.by_task,
        "instance": report.by_instance,
    }[group_by]
    return {
        "since": timestamp(since),
        "until": timestamp(until),
        "groupBy": group_by,
        "totalUsd": round(report.total_usd, 6),
        "idleUsd": round(report.idle_usd, 6),
        "instanceHours": round(report.instance_hours, 6),
        "groups": _lines(groups),
    }
