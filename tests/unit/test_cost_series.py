"""Cost over time (master/cost.py): buckets clipped to the range that add up to the whole
range's report, efficiency, the idle share, and experiment and label groups that add up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from master.cost import (
    NO_EXPERIMENT,
    NO_LABEL,
    AllocationSpan,
    InstanceSpan,
    bucket_bounds,
    cost_report,
    cost_series,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_hour_buckets_are_clipped_to_the_range() -> None:
    bounds = list(bucket_bounds(h(0.5), h(3.25), "hour"))
    assert bounds == [(h(0.5), h(1)), (h(1), h(2)), (h(2), h(3)), (h(3), h(3.25))]


def test_day_buckets_cut_at_utc_midnight() -> None:
    bounds = list(bucket_bounds(h(-2), h(30), "day"))
    assert bounds == [(h(-2), h(0)), (h(0), h(24)), (h(24), h(30))]


def test_a_range_inside_one_bucket_is_one_bucket() -> None:
    assert list(bucket_bounds(h(0.1), h(0.2), "day")) == [(h(0.1), h(0.2))]


def test_efficiency_and_idle_slot_hours() -> None:
    instances = [InstanceSpan("i-1", "gpu", 4.0, 2, h(0), h(2))]
    allocations = [AllocationSpan("a", "bob", "gpu", "t1", {"i-1": 1}, h(0), h(1))]
    report = cost_report(instances, allocations, h(0), h(2))
    assert report.paid_slot_hours == pytest.approx(4.0)
    assert report.allocated_slot_hours == pytest.approx(1.0)
    assert report.idle_slot_hours == pytest.approx(3.0)
    assert report.efficiency == pytest.approx(0.25)
    allocated = sum(line.usd for line in report.by_pool_allocated.values())
    assert allocated + report.idle_usd == pytest.approx(report.total_usd)
    assert report.by_instance_allocated["i-1"].usd == pytest.approx(2.0)


def test_nothing_paid_has_no_efficiency() -> None:
    assert cost_report([], [], h(0), h(1)).efficiency is None


def test_experiments_and_labels_add_up() -> None:
    instances = [InstanceSpan("i-1", "gpu", 2.0, 2, h(0), h(1))]
    allocations = [
        AllocationSpan("a", "al", "gpu", "t1", {"i-1": 1}, h(0), h(1), "7", ("fast", "cnn")),
        AllocationSpan("b", "al", "gpu", "c1", {"i-1": 1}, h(0), h(1)),
    ]
    report = cost_report(instances, allocations, h(0), h(1))
    assert report.by_experiment["7"].usd == pytest.approx(1.0)
    assert report.by_experiment[NO_EXPERIMENT].usd == pytest.approx(1.0)
    assert report.by_label["fast"].usd == pytest.approx(0.5)
    assert report.by_label["cnn"].usd == pytest.approx(0.5)
    assert report.by_label[NO_LABEL].usd == pytest.approx(1.0)
    assert report.idle_usd == pytest.approx(0.0)


hours = st.floats(min_value=-30, max_value=30, allow_nan=False)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[InstanceSpan], list[AllocationSpan]]:
    instances = []
    for index in range(draw(st.integers(0, 4))):
        start = draw(hours)
        end = draw(st.none() | st.floats(min_value=start, max_value=40))
        price = draw(st.floats(min_value=0, max_value=50, allow_nan=False))
        slots = draw(st.integers(1, 8))
        instances.append(
            InstanceSpan(
                f"i-{index}", "gpu", price, slots, h(start), None if end is None else h(end)
            )
        )
    # At most one allocation per instance: the scheduler never gives a slot out twice.
    allocations = []
    for index, host in enumerate(instances):
        if not draw(st.booleans()):
            continue
        start = draw(hours)
        end = draw(st.none() | st.floats(min_value=start, max_value=40))
        allocations.append(
            AllocationSpan(
                f"a-{index}",
                draw(st.sampled_from(["al", "bo"])),
                "gpu",
                f"t-{index}",
                {host.id: draw(st.integers(1, host.slots))},
                h(start),
                None if end is None else h(end),
            )
        )
    return instances, allocations


@given(
    fleet=fleets(),
    since=hours,
    length=st.floats(min_value=0.01, max_value=60),
    bucket=st.sampled_from(["hour", "day"]),
)
def test_buckets_add_up_to_the_whole_range(
    fleet: tuple[list[InstanceSpan], list[AllocationSpan]],
    since: float,
    length: float,
    bucket: str,
) -> None:
    instances, allocations = fleet
    start, end = h(since), h(since + length)
    whole = cost_report(instances, allocations, start, end)
    series = cost_series(instances, allocations, start, end, bucket)  # type: ignore[arg-type]
    assert series[0].since == start and series[-1].until == end
    assert sum(r.total_usd for r in series) == pytest.approx(whole.total_usd, abs=1e-6)
    assert sum(r.idle_usd for r in series) == pytest.approx(whole.idle_usd, abs=1e-6)
    assert sum(r.allocated_slot_hours for r in series) == pytest.approx(
        whole.allocated_slot_hours, abs=1e-6
    )
