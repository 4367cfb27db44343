"""What the console shows of a pool's market: spot, and whether it has fallen back to on-demand
(master/api/resource_pools.py), and the queue's reasons in words (master/api/queue_reasons.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from master.api.queue_reasons import (
    PoolView,
    WaitingJob,
    launch_coverage,
    queue_reason,
    queue_reasons,
)
from master.api.resource_pools import _fallback, _limits
from provisioner.config import ProviderConfig
from provisioner.loop import PoolLoop

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def loop(**provider: Any) -> PoolLoop:
    config = ProviderConfig(type="local", **provider)
    return PoolLoop("gpu", config, provider=None, world=None, clock=lambda: NOW)  # type: ignore[arg-type]


def test_a_spot_pool_falls_back_once_spot_was_unavailable_for_the_delay() -> None:
    pool = loop(spot=True, spot_fallback={"delay": "2m"})
    assert _limits(pool.config)["market"] == "spot"
    assert _fallback(pool, NOW) == {"active": False, "reason": None}
    pool.spot_unavailable_since = NOW - timedelta(minutes=1)
    waiting = _fallback(pool, NOW)
    assert waiting["active"] is False and "on-demand from 2026-01-01T12:01:00" in waiting["reason"]
    pool.status.summary = "spot g5.xlarge backed off, trying on-demand"
    active = _fallback(pool, NOW + timedelta(minutes=2))
    assert active["active"] is True and "trying on-demand" in active["reason"]


def test_spot_only_never_falls_back_and_on_demand_pools_say_so() -> None:
    pool = loop(spot=True, spot_fallback={"policy": "spot_only"})
    pool.spot_unavailable_since = NOW - timedelta(hours=1)
    assert _fallback(pool, NOW)["active"] is False
    assert "spot_only" in _fallback(pool, NOW)["reason"]
    limits = _limits(ProviderConfig(type="local", max_idle_agent_period="off"))
    assert limits["market"] == "on-demand" and limits["maxIdleAgentPeriod"] is None


def view(**fields: Any) -> PoolView:
    base: dict[str, Any] = {
        "name": "gpu",
        "provisioned": True,
        "agents": 0,
        "most_free_on_one_agent": 0,
        "free_slots": 0,
        "instance_type": "g5.xlarge",
        "max_instances": 4,
    }
    return PoolView(**{**base, **fields})


@pytest.mark.parametrize(
    ("slots", "ahead", "pool", "scheduler", "expected"),
    [
        (
            1,
            0,
            view(starting=1, alive=2, starting_market="spot"),
            None,
            "launching 2 × g5.xlarge spot, 1 joined",
        ),
        (
            1,
            3,
            view(alive=4),
            None,
            "behind 3 jobs of higher priority; pool 'gpu' at max_instances 4",
        ),
        (
            1,
            1,
            view(alive=1, degraded="AMI not found"),
            None,
            "behind 1 job of higher priority; pool 'gpu' cannot launch: AMI not found",
        ),
        (
            1,
            0,
            view(alive=1, backoff="no capacity in us-east-1a"),
            None,
            "pool 'gpu' backing off a launch: no capacity in us-east-1a",
        ),
        (1, 0, view(), None, "waiting for pool 'gpu' to launch an instance"),
        (2, 0, view(provisioned=False), None, "waiting for an agent to join pool 'gpu'"),
        (2, 0, view(provisioned=False, agents=1), "the scheduler's words", "the scheduler's words"),
        (
            2,
            0,
            view(provisioned=False, agents=1, most_free_on_one_agent=1),
            None,
            "waiting for 2 free slots in pool 'gpu' (at most 1 free on one agent now)",
        ),
        (1, 0, None, None, "its resource pool is not configured"),
    ],
)
def test_queue_reasons(
    slots: int, ahead: int, pool: PoolView | None, scheduler: str | None, expected: str
) -> None:
    assert queue_reason(slots, ahead, pool, scheduler) == expected


def test_starting_instances_cover_the_first_jobs_in_queue_order() -> None:
    # Three 2-slot jobs, a pool capped at 2 instances of 2 slots, both starting: the first two
    # jobs are what they are for, the third waits for the cap (issue 11's Queue screenshot).
    pool = view(
        name="default",
        instance_type="local",
        starting=2,
        alive=2,
        starting_market="on-demand",
        max_instances=2,
        starting_slots=(2, 2),
    )
    jobs = [WaitingJob(slots=2, ahead=0) for _ in range(3)]
    assert queue_reasons(jobs, pool) == [
        "launching 2 × local on-demand, 0 joined",
        "launching 2 × local on-demand, 0 joined",
        "pool 'default' at max_instances 2, behind 2 jobs the launching instances are for",
    ]
    # Below the cap the pool may grow for the third job.
    grows = queue_reasons(jobs, replace(pool, max_instances=4))
    assert grows[2] == (
        "waiting for pool 'default' to launch an instance, "
        "behind 2 jobs the launching instances are for"
    )
    # A job of higher priority keeps its own clause.
    assert queue_reasons([*jobs[:2], WaitingJob(slots=2, ahead=2)], pool)[2].startswith(
        "behind 2 jobs of higher priority; pool 'default' at max_instances 2, behind 2 jobs"
    )


@pytest.mark.parametrize(
    ("jobs", "instances", "expected"),
    [
        ([1, 1, 1, 1], [2, 2], [True, True, True, True]),
        ([1, 1, 1], [2], [True, True, False]),
        ([2, 1, 1], [2, 2], [True, True, True]),
        ([4, 1], [2, 2], [True, False]),  # a 4-slot job takes both whole instances
        ([1, 4], [2, 2], [True, False]),  # one is no longer whole
        ([3, 1], [2], [False, True]),  # a later smaller job still fits
        ([0, 2], [2], [True, True]),
    ],
)
def test_launch_coverage_places_jobs_as_the_scheduler_will(
    jobs: list[int], instances: list[int], expected: list[bool]
) -> None:
    assert launch_coverage(jobs, instances) == expected


# ---- a service's idle deadline (master/api/services.py) ------------------------------------------


class Hub:
    def __init__(self, last: datetime | None, tunnel: bool = False) -> None:
        self.last_activity = {"nb": last} if last is not None else {}
        self.tunnel = tunnel

    def has_open_tunnel(self, task_id: str) -> bool:
        return self.tunnel


def service(ready: bool = True) -> Any:
    from master.scheduler.state import Allocation, AllocationState

    return Allocation(
        id="nb.1",
        task_id="nb",
        task_type="NOTEBOOK",
        owner="alice",
        pool="default",
        slots=0,
        priority=42,
        submitted_at=NOW,
        argv=[],
        env={},
        state=AllocationState.RUNNING,
        service=True,
        service_ready=ready,
    )


def test_a_ready_service_is_killed_its_idle_timeout_after_its_last_activity() -> None:
    from master import models
    from master.api.services import idle_deadline

    task = models.Task(id="nb", config={"idle_timeout": "30m"})
    last = NOW - timedelta(minutes=5)
    assert idle_deadline(task, service(), Hub(last)) == last + timedelta(minutes=30)  # type: ignore[arg-type]
    assert idle_deadline(task, service(ready=False), Hub(last)) is None  # type: ignore[arg-type]
    assert idle_deadline(task, service(), Hub(last, tunnel=True)) is None  # type: ignore[arg-type]
    assert idle_deadline(task, service(), Hub(None)) is None  # type: ignore[arg-type]
    assert idle_deadline(task, None, Hub(last)) is None  # type: ignore[arg-type]
    off = models.Task(id="nb", config={"idle_timeout": "off"})
    assert idle_deadline(off, service(), Hub(last)) is None  # type: ignore[arg-type]
