"""What the fleet cost, and who it was for — pure arithmetic over instance and allocation spans.

An instance costs its price from launch until termination (or ``until``). An allocation is
charged, per agent it ran on, its share of that agent's instance: slot-seconds × the instance's
price per slot-second. What no allocation used is *idle* cost — the price of keeping capacity
warm, shown separately so an admin sees it.

Slot-hours say the same in capacity rather than dollars: *paid* slot-hours are every instance's
slots × hours, *allocated* ones what allocations held; their ratio is the fleet's efficiency.
The ``*_allocated`` groupings hold only allocated money, so with the idle cost they add up to
the total (the console's groups plus its idle row).

Cost over a range is additive: the cost of [a, c) is that of [a, b) plus that of [b, c), so a
time series' buckets (:func:`cost_series`) add up to the report of the whole range.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class InstanceSpan:
    id: str
    pool: str
    price_per_hour: float
    slots: int
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class AllocationSpan:
    id: str
    user: str
    pool: str
    task_id: str
    agent_slots: dict[str, int]  # agent (= instance) id → slots used there
    start: datetime
    end: datetime | None
    experiment: str | None = None  # the experiment id of a trial's allocation
    labels: tuple[str, ...] = ()  # that experiment's labels


@dataclass
class CostLine:
    key: str
    usd: float = 0.0
    slot_hours: float = 0.0


@dataclass
class CostReport:
    since: datetime
    until: datetime
    total_usd: float = 0.0
    idle_usd: float = 0.0
    instance_hours: float = 0.0
    by_pool: dict[str, CostLine] = field(default_factory=dict)
    by_user: dict[str, CostLine] = field(default_factory=dict)
    by_task: dict[str, CostLine] = field(default_factory=dict)
    by_instance: dict[str, CostLine] = field(default_factory=dict)
    paid_slot_hours: float = 0.0
    allocated_slot_hours: float = 0.0
    # Allocated money only (no idle), so that with ``idle_usd`` they add up to ``total_usd``.
    by_pool_allocated: dict[str, CostLine] = field(default_factory=dict)
    by_instance_allocated: dict[str, CostLine] = field(default_factory=dict)
    by_experiment: dict[str, CostLine] = field(default_factory=dict)
    by_label: dict[str, CostLine] = field(default_factory=dict)

    @property
    def idle_slot_hours(self) -> float:
        return max(self.paid_slot_hours - self.allocated_slot_hours, 0.0)

    @property
    def efficiency(self) -> float | None:
        """Allocated ÷ paid slot-hours (0..1); None when nothing was paid for."""
        if self.paid_slot_hours <= 0:
            return None
        return min(self.allocated_slot_hours / self.paid_slot_hours, 1.0)


NO_EXPERIMENT = "(no experiment)"
NO_LABEL = "(no label)"


def _overlap(start: datetime, end: datetime | None, since: datetime, until: datetime) -> float:
    """Seconds of [start, end) inside [since, until)."""
    stop = min(end or until, until)
    begin = max(start, since)
    return max((stop - begin).total_seconds(), 0.0)


def _add(lines: dict[str, CostLine], key: str, usd: float, slot_hours: float) -> None:
    line = lines.setdefault(key, CostLine(key))
    line.usd += usd
    line.slot_hours += slot_hours


def cost_report(
    instances: Iterable[InstanceSpan],
    allocations: Iterable[AllocationSpan],
    since: datetime,
    until: datetime,
) -> CostReport:
    report = CostReport(since, until)
    by_id = {i.id: i for i in instances}
    used: dict[str, float] = defaultdict(float)  # instance id → attributed $
    for instance in by_id.values():
        seconds = _overlap(instance.start, instance.end, since, until)
        usd = instance.price_per_hour * seconds / SECONDS_PER_HOUR
        report.total_usd += usd
        report.instance_hours += seconds / SECONDS_PER_HOUR
        report.paid_slot_hours += instance.slots * seconds / SECONDS_PER_HOUR
        _add(report.by_instance, instance.id, usd, instance.slots * seconds / SECONDS_PER_HOUR)
        _add(report.by_pool, instance.pool, 0.0, 0.0)
    for allocation in allocations:
        for agent_id, slots in allocation.agent_slots.items():
            host = by_id.get(agent_id)
            if host is None or slots <= 0:
                continue  # a static agent: no price
            start = max(allocation.start, host.start)
            end = min(allocation.end or until, host.end or until)
            seconds = _overlap(start, end, since, until)
            slot_hours = slots * seconds / SECONDS_PER_HOUR
            usd = slot_hours * host.price_per_hour / host.slots
            used[host.id] += usd
            report.allocated_slot_hours += slot_hours
            for lines, key in (
                (report.by_pool, allocation.pool),
                (report.by_user, allocation.user),
                (report.by_task, allocation.task_id),
                (report.by_pool_allocated, allocation.pool),
                (report.by_instance_allocated, host.id),
                (report.by_experiment, allocation.experiment or NO_EXPERIMENT),
            ):
                _add(lines, key, usd, slot_hours)
            # An experiment's money is split evenly between its labels (so labels add up).
            labels = allocation.labels or (NO_LABEL,)
            for label in labels:
                _add(report.by_label, label, usd / len(labels), slot_hours / len(labels))
    for instance in by_id.values():
        instance_usd = report.by_instance[instance.id].usd
        idle = max(instance_usd - used[instance.id], 0.0)
        report.idle_usd += idle
        _add(report.by_pool, instance.pool, idle, 0.0)
    return report


Bucket = Literal["hour", "day"]
BUCKET_LENGTHS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


def bucket_bounds(
    since: datetime, until: datetime, bucket: Bucket
) -> Iterator[tuple[datetime, datetime]]:
    """``[since, until)`` cut at every whole UTC hour or UTC midnight: the first and last
    buckets are clipped to the range."""
    step = BUCKET_LENGTHS[bucket]
    start = since.astimezone(UTC)
    aligned = start.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        aligned = aligned.replace(hour=0)
    edge = aligned + step
    while start < until:
        end = min(edge, until)
        yield start, end
        start, edge = end, edge + step


def cost_series(
    instances: list[InstanceSpan],
    allocations: list[AllocationSpan],
    since: datetime,
    until: datetime,
    bucket: Bucket,
) -> list[CostReport]:
    """One report per bucket of ``[since, until)``; their totals add up to the whole range's."""
    reports = []
    for start, end in bucket_bounds(since, until, bucket):
        overlapping_instances = [
            i for i in instances if i.start < end and (i.end is None or i.end > start)
        ]
        overlapping_allocations = [
            a for a in allocations if a.start < end and (a.end is None or a.end > start)
        ]
        reports.append(cost_report(overlapping_instances, overlapping_allocations, start, end))
    return reports
