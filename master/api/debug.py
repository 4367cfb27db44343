"""``GET /debug/scheduler``: how the scheduler keeps up, for administrators.

Figures from :mod:`master.scheduler.stats` (recent windows, not all time) and the scheduler's
live state: passes (count, time each held the event loop, its transaction's time, events per
pass), the event queue, allocations queued and running, agents, and the event loop's lag.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from master import auth, models
from master.api.openapi import Shape, documented
from master.scheduler.state import AllocationState
from master.scheduler.stats import percentile_ms
from master.state import MasterState

router = APIRouter(prefix="/debug")


class PassFigures(Shape):
    count: int
    events: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    flush_p50_ms: float
    flush_p99_ms: float
    events_mean: float
    events_max: int


class LoopLag(Shape):
    p50_ms: float
    p99_ms: float
    max_ms: float


class AllocationCounts(Shape):
    queued: int
    running: int


class SchedulerDebug(Shape):
    passes: PassFigures
    queue_length: int
    allocations: AllocationCounts
    agents: int
    loop_lag: LoopLag


@router.get("/scheduler", **documented(SchedulerDebug))
async def scheduler_debug(
    request: Request, _: models.User = Depends(auth.admin_user)
) -> dict[str, Any]:
    """Pass times are how long a pass held the event loop; ``flushP99Ms`` its transaction's
    wall time. Running counts every allocation placed on agents (starting, running or
    terminating)."""
    state: MasterState = request.app.state.master
    scheduler = state.scheduler
    stats = scheduler.stats
    queued = sum(1 for a in scheduler.allocations.values() if a.state == AllocationState.QUEUED)
    window = stats.events_per_pass
    reply = SchedulerDebug(
        passes=PassFigures(
            count=stats.passes,
            events=stats.events,
            p50_ms=percentile_ms(stats.pass_seconds, 0.5),
            p99_ms=percentile_ms(stats.pass_seconds, 0.99),
            max_ms=percentile_ms(stats.pass_seconds, 1.0),
            flush_p50_ms=percentile_ms(stats.flush_seconds, 0.5),
            flush_p99_ms=percentile_ms(stats.flush_seconds, 0.99),
            events_mean=round(sum(window) / len(window), 2) if window else 0.0,
            events_max=max(window, default=0),
        ),
        queue_length=scheduler.queue_length,
        allocations=AllocationCounts(queued=queued, running=len(scheduler.allocations) - queued),
        agents=len(scheduler.agents),
        loop_lag=LoopLag(
            p50_ms=percentile_ms(stats.lag_seconds, 0.5),
            p99_ms=percentile_ms(stats.lag_seconds, 0.99),
            max_ms=percentile_ms(stats.lag_seconds, 1.0),
        ),
    )
    return reply.model_dump(by_alias=True)
