"""Cost attribution: instances by the hour, allocations by slot-seconds, the rest idle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from master.cost import AllocationSpan, InstanceSpan, cost_report

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_a_fully_used_instance_has_no_idle_cost() -> None:
    instances = [InstanceSpan("i-1", "gpu", 2.0, 2, h(0), h(1))]
    allocations = [AllocationSpan("a", "alice", "gpu", "t1", {"i-1": 2}, h(0), h(1))]
    report = cost_report(instances, allocations, h(0), h(2))
    assert report.total_usd == pytest.approx(2.0)
    assert report.idle_usd == pytest.approx(0.0)
    assert report.by_user["alice"].usd == pytest.approx(2.0)
    assert report.by_user["alice"].slot_hours == pytest.approx(2.0)


def test_half_the_slots_for_half_the_time_is_a_quarter() -> None:
    instances = [InstanceSpan("i-1", "gpu", 4.0, 2, h(0), h(2))]
    allocations = [AllocationSpan("a", "bob", "gpu", "t1", {"i-1": 1}, h(0), h(1))]
    report = cost_report(instances, allocations, h(0), h(2))
    assert report.total_usd == pytest.approx(8.0)
    assert report.by_user["bob"].usd == pytest.approx(2.0)
    assert report.idle_usd == pytest.approx(6.0)
    assert report.by_pool["gpu"].usd == pytest.approx(8.0)


def test_the_window_clips_spans_and_open_spans_run_to_until() -> None:
    instances = [InstanceSpan("i-1", "gpu", 1.0, 1, h(-5), None)]
    allocations = [AllocationSpan("a", "carol", "gpu", "t1", {"i-1": 1}, h(-1), None)]
    report = cost_report(instances, allocations, h(0), h(3))
    assert report.total_usd == pytest.approx(3.0)
    assert report.instance_hours == pytest.approx(3.0)
    assert report.by_user["carol"].usd == pytest.approx(3.0)


def test_allocations_on_static_agents_cost_nothing() -> None:
    allocations = [AllocationSpan("a", "dave", "default", "t1", {"static-agent": 1}, h(0), h(1))]
    report = cost_report([], allocations, h(0), h(1))
    assert report.total_usd == 0.0 and report.by_user == {}


def test_an_allocation_spanning_two_instances_pays_for_both() -> None:
    instances = [
        InstanceSpan("i-1", "gpu", 1.0, 1, h(0), h(1)),
        InstanceSpan("i-2", "gpu", 3.0, 1, h(0), h(1)),
    ]
    allocations = [AllocationSpan("a", "erin", "gpu", "t", {"i-1": 1, "i-2": 1}, h(0), h(1))]
    report = cost_report(instances, allocations, h(0), h(1))
    assert report.by_task["t"].usd == pytest.approx(4.0)
    assert report.by_task["t"].slot_hours == pytest.approx(2.0)
