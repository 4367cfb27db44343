"""``GET /api/v1/cost`` and ``GET /api/v1/cost/series``: what the fleet cost over a time range
(and per hour or day of it), by pool, user, experiment, label, task or instance, with the idle
money and the fleet's efficiency.

Flotilla's own endpoints (Determined has none). Instance hours come from the provisioner's
records; allocations are charged by slot-seconds on the instances they ran on
(``master.cost``). Every grouping holds allocated money only; for admins an ``idle`` group holds
the rest, so the groups add up to ``totalUsd``. A user who is not an admin sees only their own
allocations: the total is their share, with no idle group and no fleet-wide figures.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.console_schemas import CostSeries
from master.api.errors import bad_request
from master.api.openapi import documented
from master.api.schemas import CostReport
from master.api.wire import timestamp
from master.cost import (
    BUCKET_LENGTHS,
    AllocationSpan,
    Bucket,
    CostLine,
    InstanceSpan,
    cost_report,
    cost_series,
)
from master.cost import CostReport as Report
from master.experiments import views
from master.state import MasterState

router = APIRouter(prefix="/api/v1")
DEFAULT_WINDOW = timedelta(days=1)
MAX_BUCKETS = 2000  # a series of more buckets than this is refused (e.g. hours of 3 months)
GroupBy = Literal["pool", "user", "experiment", "label", "task", "instance"]
Format = Literal["json", "csv"]
IDLE_KEY = "idle"
CSV = "text/csv"


def _experiments_of_tasks(
    session: Session, tasks: list[models.Task]
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Task id → (experiment id, its labels) for the trials' tasks among ``tasks``."""
    trial_of = {
        t.id: int(t.config["trial_id"]) for t in tasks if isinstance(t.config.get("trial_id"), int)
    }
    if not trial_of:
        return {}
    experiment_of = dict(
        session.execute(
            select(models.Trial.id, models.Trial.experiment_id).where(
                models.Trial.id.in_(set(trial_of.values()))
            )
        ).all()
    )
    labels: dict[int, list[str]] = defaultdict(list)
    for experiment_id, label in session.execute(
        select(models.ExperimentLabel.experiment_id, models.ExperimentLabel.label)
        .where(models.ExperimentLabel.experiment_id.in_(set(experiment_of.values())))
        .order_by(models.ExperimentLabel.label)
    ):
        labels[experiment_id].append(label)
    found = {}
    for task_id, trial_id in trial_of.items():
        owner = experiment_of.get(trial_id)
        if owner is not None:
            found[task_id] = (str(owner), tuple(labels[owner]))
    return found


def spans(
    session: Session, since: datetime, until: datetime, task_ids: list[str] | None = None
) -> tuple[list[InstanceSpan], list[AllocationSpan]]:
    """Instances and allocations overlapping ``[since, until)`` (allocations of ``task_ids``
    only, when given)."""
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
    query = (
        select(models.Allocation, models.Task, models.User.username)
        .join(models.Task, models.Task.id == models.Allocation.task_id)
        .join(models.User, models.User.id == models.Task.owner_id)
        .where(
            models.Allocation.started_at.is_not(None),
            models.Allocation.started_at < until,
            or_(models.Allocation.ended_at.is_(None), models.Allocation.ended_at > since),
        )
    )
    if task_ids is not None:
        query = query.where(models.Allocation.task_id.in_(task_ids))
    rows = session.execute(query).all()
    experiments = _experiments_of_tasks(session, [task for _, task, _ in rows])
    allocations = []
    for row, task, username in rows:
        assert row.started_at is not None
        experiment, labels = experiments.get(task.id, (None, ()))
        allocations.append(
            AllocationSpan(
                row.id,
                username,
                task.resource_pool,
                task.id,
                {agent: len(slots) for agent, slots in (row.agent_slots or {}).items()},
                row.started_at,
                row.ended_at,
                experiment,
                labels,
            )
        )
    return instances, allocations


def experiment_costs(
    session: Session, experiments: Sequence[models.Experiment], now: datetime
) -> dict[int, float]:
    """What each experiment's trials cost from its start until ``now``, as ``/cost`` counts it
    (0 for one that ran nothing on a priced instance)."""
    ids = [e.id for e in experiments]
    costs = dict.fromkeys(ids, 0.0)
    task_ids = list(
        session.scalars(
            select(models.TrialRun.task_id)
            .join(models.Trial, models.Trial.id == models.TrialRun.trial_id)
            .where(models.Trial.experiment_id.in_(ids))
        )
    )
    since = min((e.start_time for e in experiments), default=now)
    if not task_ids or since >= now:
        return costs
    instances, allocations = spans(session, since, now, task_ids)
    report = cost_report(instances, allocations, since, now)
    for experiment_id in ids:
        line = report.by_experiment.get(str(experiment_id))
        if line is not None:
            costs[experiment_id] = round(line.usd, 6)
    return costs


def experiments_with_cost(
    session: Session, rows: Sequence[models.Experiment], now: datetime
) -> list[dict[str, Any]]:
    """``views.experiments_json`` with each experiment's ``costUsd`` so far."""
    found = views.experiments_json(session, rows, now)
    costs = experiment_costs(session, rows, now)
    for body in found:
        body["costUsd"] = costs.get(body["id"], 0.0)
    return found


def _groups(report: Report, group_by: GroupBy, admin: bool, digits: int) -> list[dict[str, Any]]:
    """The report's lines for ``group_by``, largest first, then (for admins) the idle row."""
    lines: dict[str, CostLine] = {
        "pool": report.by_pool_allocated,
        "user": report.by_user,
        "experiment": report.by_experiment,
        "label": report.by_label,
        "task": report.by_task,
        "instance": report.by_instance_allocated,
    }[group_by]
    groups = [
        {
            "key": line.key,
            "usd": round(line.usd, digits),
            "slotHours": round(line.slot_hours, digits),
            "idle": False,
        }
        for line in sorted(lines.values(), key=lambda line: (-line.usd, line.key))
    ]
    if admin:
        groups.append(
            {
                "key": IDLE_KEY,
                "usd": round(report.idle_usd, digits),
                "slotHours": round(report.idle_slot_hours, digits),
                "idle": True,
            }
        )
    return groups


def _range(
    state: MasterState, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    until = until or state.clock()
    since = since or until - DEFAULT_WINDOW
    if since.tzinfo is None:
        raise bad_request("since: give a time zone, e.g. 2026-01-01T00:00:00Z")
    if until.tzinfo is None:
        raise bad_request("until: give a time zone, e.g. 2026-01-01T00:00:00Z")
    if since >= until:
        raise bad_request("since: must be before until")
    return since, until


async def _spans_for(
    state: MasterState, user: models.User, since: datetime, until: datetime
) -> tuple[list[InstanceSpan], list[AllocationSpan]]:
    instances, allocations = await state.db.run(lambda s: spans(s, since, until))
    if not user.admin:
        allocations = [a for a in allocations if a.user == user.username]
    return instances, allocations


def _scoped(report: Report, admin: bool) -> Report:
    """A non-admin's report: the total is their allocations' money; nothing fleet-wide."""
    if admin:
        return report
    report.total_usd = sum(line.usd for line in report.by_user.values())
    report.idle_usd = 0.0
    report.instance_hours = 0.0
    report.paid_slot_hours = report.allocated_slot_hours
    return report


def _efficiency(report: Report, admin: bool) -> float | None:
    value = report.efficiency if admin else None
    return round(value, 6) if value is not None else None


def _csv(header: list[str], rows: list[list[Any]], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Response(
        buffer.getvalue(),
        media_type=f"{CSV}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _csv_name(kind: str, since: datetime, until: datetime) -> str:
    return f"flotilla-{kind}-{since:%Y%m%dT%H%M%SZ}-{until:%Y%m%dT%H%M%SZ}.csv"


def _with_csv(model: Any) -> dict[str, Any]:
    """``documented(model)`` whose 200 may also be CSV (``format=csv``)."""
    kwargs = documented(model)
    kwargs["responses"][200]["content"] = {CSV: {"schema": {"type": "string"}}}
    return kwargs


_SINCE = Query(None, description="RFC 3339 with a time zone; default: 24 hours before until")
_UNTIL = Query(None, description="RFC 3339 with a time zone; default: now")
_GROUP_BY = Query("pool", alias="groupBy")
_FORMAT = Query("json", description="json, or csv for a spreadsheet")


@router.get("/cost", **_with_csv(CostReport))
async def get_cost(
    request: Request,
    since: datetime | None = _SINCE,
    until: datetime | None = _UNTIL,
    group_by: GroupBy = _GROUP_BY,
    format: Format = _FORMAT,
    user: models.User = Depends(auth.current_user),
) -> Any:
    state: MasterState = request.app.state.master
    since, until = _range(state, since, until)
    instances, allocations = await _spans_for(state, user, since, until)
    report = _scoped(cost_report(instances, allocations, since, until), user.admin)
    groups = _groups(report, group_by, user.admin, 6)
    if format == "csv":
        rows = [[group_by, g["key"], g["usd"], g["slotHours"], g["idle"]] for g in groups]
        header = ["group_by", "key", "usd", "slot_hours", "idle"]
        return _csv(header, rows, _csv_name("cost", since, until))
    return {
        "since": timestamp(since),
        "until": timestamp(until),
        "groupBy": group_by,
        "totalUsd": round(report.total_usd, 6),
        "idleUsd": round(report.idle_usd, 6),
        "instanceHours": round(report.instance_hours, 6),
        "paidSlotHours": round(report.paid_slot_hours, 6),
        "allocatedSlotHours": round(report.allocated_slot_hours, 6),
        "efficiency": _efficiency(report, user.admin),
        "groups": groups,
    }


@router.get("/cost/series", **_with_csv(CostSeries))
async def get_cost_series(
    request: Request,
    since: datetime | None = _SINCE,
    until: datetime | None = _UNTIL,
    bucket: Bucket = Query("hour", description="hour or day (UTC), clipped to the range"),
    group_by: GroupBy = _GROUP_BY,
    format: Format = _FORMAT,
    user: models.User = Depends(auth.current_user),
) -> Any:
    """The cost per hour or day of the range; the buckets' totals add up to ``/cost``'s."""
    state: MasterState = request.app.state.master
    since, until = _range(state, since, until)
    if (until - since) / BUCKET_LENGTHS[bucket] > MAX_BUCKETS - 1:
        raise bad_request(
            f"bucket: {bucket} buckets over this range would be more than {MAX_BUCKETS}; "
            "use day buckets or a shorter range"
        )
    instances, allocations = await _spans_for(state, user, since, until)
    whole = _scoped(cost_report(instances, allocations, since, until), user.admin)
    reports = [
        _scoped(r, user.admin) for r in cost_series(instances, allocations, since, until, bucket)
    ]
    # Not rounded to cents' fractions as /cost is: hundreds of rounded buckets would drift.
    buckets: list[dict[str, Any]] = [
        {
            "start": timestamp(r.since),
            "end": timestamp(r.until),
            "totalUsd": round(r.total_usd, 9),
            "idleUsd": round(r.idle_usd, 9),
            "groups": _groups(r, group_by, user.admin, 9),
        }
        for r in reports
    ]
    if format == "csv":
        header = ["bucket_start", "bucket_end", "group_by", "key", "usd", "slot_hours", "idle"]
        rows = [
            [b["start"], b["end"], group_by, g["key"], g["usd"], g["slotHours"], g["idle"]]
            for b in buckets
            for g in b["groups"]
        ]
        return _csv(header, rows, _csv_name("cost-series", since, until))
    return {
        "since": timestamp(since),
        "until": timestamp(until),
        "bucket": bucket,
        "groupBy": group_by,
        "totalUsd": round(whole.total_usd, 6),
        "idleUsd": round(whole.idle_usd, 6),
        "buckets": buckets,
    }
