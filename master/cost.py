"""What the fleet cost, and who it was for — pure arithmetic over instance and allocation spans.

An instance costs its price from launch until termination (or ``until``). An allocation is
charged, per agent it ran on, its share of that agent's instance: slot-seconds × the instance's
price per slot-second. What no allocation used is *idle* cost — the price of keeping capacity
warm, shown separately so an admin sees it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

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
            for lines, key in (
                (report.by_pool, allocation.pool),
                (report.by_user, allocation.user),
                (report.by_task, allocation.task_id),
            ):
                _add(lines, key, usd, slot_hours)
    for instance in by_id.values():
        instance_usd = report.by_instance[instance.id].usd
        idle = max(instance_usd - used[instance.id], 0.0)
        report.idle_usd += idle
        _add(report.by_pool, instance.pool, idle, 0.0)
    return report
