"""Table tests of the scheduler's pure decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from master.scheduler.fit import (
    AgentCapacity,
    PoolCapacity,
    RunningAllocation,
    SlotRequest,
    fit,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def req(
    alloc: str,
    slots: int = 1,
    priority: int = 42,
    group: str = "u",
    at: int = 0,
    pool: str = "default",
    single_agent: bool = True,
) -> SlotRequest:
    return SlotRequest(
        alloc, pool, slots, priority, group, T0 + timedelta(seconds=at), single_agent
    )


def agent(
    agent_id: str,
    total: int,
    free: int | None = None,
    pool: str = "default",
    schedulable: bool = True,
    running: int = 0,
) -> AgentCapacity:
    free_ids = tuple(range(total - (total if free is None else free), total))
    return AgentCapacity(agent_id, pool, total, free_ids, schedulable, running)


def running(
    alloc: str,
    slots: int,
    priority: int = 42,
    group: str = "u",
    preemptible: bool = False,
    agent_id: str = "a",
    at: int = 0,
) -> RunningAllocation:
    return RunningAllocation(
        alloc,
        "default",
        slots,
        priority,
        group,
        T0 + timedelta(seconds=at),
        {agent_id: tuple(range(slots))},
        preemptible,
    )


def test_lower_priority_number_goes_first() -> None:
    result = fit(
        [req("low", priority=50, at=0), req("high", priority=10, at=5)], [agent("a", 1)], []
    )
    assert list(result.assignments) == ["high"]
    assert "low" in result.waiting


def test_equal_priority_is_fair_share_by_group() -> None:
    # alice already holds 2 slots; bob's later request goes before alice's earlier one.
    result = fit(
        [req("alice-2", group="alice", at=0), req("bob-1", group="bob", at=10)],
        [agent("a", 3, free=1)],
        [running("alice-1", 2, group="alice")],
    )
    assert list(result.assignments) == ["bob-1"]


def test_fair_share_counts_what_this_pass_gave_out() -> None:
    result = fit(
        [
            req("a1", group="alice", at=0),
            req("a2", group="alice", at=1),
            req("b1", group="bob", at=2),
        ],
        [agent("x", 2)],
        [],
    )
    assert sorted(result.assignments) == ["a1", "b1"]


def test_best_fit_keeps_whole_agents_free() -> None:
    result = fit([req("r", slots=1)], [agent("big", 4), agent("small", 2, free=1)], [])
    assert list(result.assignments["r"]) == ["small"]


def test_single_agent_request_never_split() -> None:
    result = fit([req("r", slots=3)], [agent("a", 2), agent("b", 2)], [])
    assert result.unschedulable["r"].startswith("requests 3 slots on one agent")


def test_multi_agent_request_spans_agents() -> None:
    result = fit([req("r", slots=3, single_agent=False)], [agent("a", 2), agent("b", 2)], [])
    placement = result.assignments["r"]
    assert sum(len(s) for s in placement.values()) == 3


@pytest.mark.parametrize(
    ("agents", "slots", "expected"),
    [
        # One agent has room: it alone is used (best fit), even though spanning is allowed.
        ([agent("a", 1), agent("b", 2)], 2, {"b": 2}),
        ([agent("a", 4), agent("b", 2)], 2, {"b": 2}),
        ([agent("a", 4, free=2), agent("b", 4)], 2, {"a": 2}),
        # None has room: span, most free slots first, so as few agents as possible.
        ([agent("a", 1), agent("b", 1)], 2, {"a": 1, "b": 1}),
        ([agent("a", 1), agent("b", 3), agent("c", 2)], 4, {"b": 3, "c": 1}),
        ([agent("a", 2), agent("b", 2), agent("c", 1)], 4, {"a": 2, "b": 2}),
    ],
)
def test_multi_agent_request_prefers_one_agent(
    agents: list[AgentCapacity], slots: int, expected: dict[str, int]
) -> None:
    result = fit([req("r", slots=slots, single_agent=False)], agents, [])
    assert {a: len(s) for a, s in result.assignments["r"].items()} == expected


def test_multi_agent_request_too_large_for_the_pool_is_rejected() -> None:
    result = fit([req("r", slots=5, single_agent=False)], [agent("a", 2), agent("b", 2)], [])
    assert result.unschedulable == {
        "r": "requests 5 slots, but resource pool 'default' has 4 in total"
    }


def test_too_large_for_the_pool_is_rejected_with_a_reason() -> None:
    result = fit([req("r", slots=64)], [agent("a", 2)], [])
    assert result.unschedulable == {
        "r": "requests 64 slots on one agent, but the largest agent in resource pool "
        "'default' has 2"
    }


def test_pool_without_agents_keeps_waiting() -> None:
    result = fit([req("r", slots=64, pool="gpu")], [agent("a", 2)], [])
    assert result.unschedulable == {}
    assert result.waiting["r"] == "waiting for an agent to join resource pool 'gpu'"


def test_explicit_capacity_overrides_the_agents_present() -> None:
    capacity = {"default": PoolCapacity(max_agent_slots=8, max_total_slots=40)}
    result = fit([req("r", slots=8)], [agent("a", 2)], [], capacity)
    assert result.unschedulable == {} and "r" in result.waiting


def test_disabled_and_draining_agents_get_no_work() -> None:
    result = fit([req("r")], [agent("a", 2, schedulable=False)], [])
    assert result.assignments == {}
    assert "disabled or draining" in result.waiting["r"]


def test_backfill_lets_small_work_past_a_blocked_big_request() -> None:
    result = fit(
        [req("big", slots=4, priority=10), req("small", slots=1, priority=50)],
        [agent("a", 4, free=1)],
        [running("other", 3)],
    )
    assert list(result.assignments) == ["small"]


def test_zero_slot_tasks_go_to_the_least_busy_agent() -> None:
    result = fit([req("tb", slots=0)], [agent("a", 1, running=3), agent("b", 1, running=1)], [])
    assert result.assignments == {"tb": {"b": ()}}


def test_preemption_names_worse_priority_preemptible_work_newest_first() -> None:
    result = fit(
        [req("urgent", slots=2, priority=10)],
        [agent("a", 2, free=0)],
        [
            running("old", 1, priority=50, preemptible=True, at=0),
            running("new", 1, priority=50, preemptible=True, at=10),
        ],
    )
    assert result.preemptions == ["new", "old"]
    assert result.assignments == {}


def test_no_preemption_of_equal_priority_or_non_preemptible_work() -> None:
    result = fit(
        [req("r", slots=1, priority=42)],
        [agent("a", 1, free=0)],
        [
            running("same", 1, priority=42, preemptible=True),
            running("cmd", 1, priority=80, preemptible=False),
        ],
    )
    assert result.preemptions == []


def test_inputs_are_not_modified() -> None:
    agents = [agent("a", 2)]
    before = list(agents[0].free_slot_ids)
    fit([req("r1"), req("r2")], agents, [])
    assert list(agents[0].free_slot_ids) == before


def test_a_request_that_found_no_room_cuts_off_larger_ones_in_its_pool() -> None:
    """Free slots only shrink during a pass: after 4 slots on one agent were not found, 4 or
    more are not looked for again, while smaller requests still are (backfill)."""
    from master.scheduler.fit import _NEVER, _Pool

    pool = _Pool("default", None)
    for capacity in (agent("a", 4, free=3), agent("b", 4, free=2)):
        pool.add(capacity)
    assert pool.place(req("big", slots=4)) is None
    assert (pool.failed_single, pool.failed_spanning) == (4, _NEVER)
    assert pool.place(req("bigger", slots=6)) is None
    assert pool.place(req("spanning", slots=4, single_agent=False)) == {"a": (1, 2, 3), "b": (2,)}
    assert pool.place(req("small", slots=1)) == {"b": (3,)}
    assert pool.place(req("two", slots=2, single_agent=False)) is None
    assert (pool.failed_single, pool.failed_spanning) == (2, 2)


def test_a_full_pool_stops_the_scan_but_still_rejects_and_preempts() -> None:
    """Once no pool can place or preempt anything more, the rest of the queue only waits —
    every request waiting for the same thing shares one reason string — or is rejected."""
    pending = [req(f"w{n}", at=n) for n in range(50)]
    pending += [req("huge", slots=9, at=99), req("urgent", priority=10, at=100)]
    result = fit(pending, [agent("a", 2, free=0)], [running("v", 1, priority=80, preemptible=True)])
    assert result.preemptions == ["v"]
    assert result.unschedulable == {
        "huge": "requests 9 slots on one agent, but the largest agent in resource pool "
        "'default' has 2"
    }
    assert len(result.waiting) == 51 and result.assignments == {}
    assert len({id(result.waiting[f"w{n}"]) for n in range(50)}) == 1
    assert result.waiting["w0"] == (
        "waiting for 1 free slots in resource pool 'default' (at most 0 free on one agent now)"
    )


def test_zero_slot_requests_are_placed_even_when_the_pool_is_full() -> None:
    pending = [req(f"w{n}", at=n) for n in range(5)] + [req("tb", slots=0, at=9)]
    result = fit(pending, [agent("a", 1, free=0, running=1)], [])
    assert result.assignments == {"tb": {"a": ()}}
    assert sorted(result.waiting) == [f"w{n}" for n in range(5)]


def test_ties_go_to_the_earliest_submitted_then_the_lowest_allocation_id() -> None:
    result = fit([req("b", at=1), req("c", at=0), req("a", at=1)], [agent("x", 2)], [])
    assert list(result.assignments) == ["c", "a"]


def test_agents_with_equal_free_slots_tie_on_their_id() -> None:
    result = fit([req("r", slots=2)], [agent("b", 4, free=2), agent("a", 2), agent("c", 2)], [])
    assert result.assignments == {"r": {"a": (0, 1)}}


def test_victims_of_equal_priority_and_start_go_in_the_order_given() -> None:
    victims = [running(v, 1, priority=80, preemptible=True, at=5) for v in ("y", "x", "z")]
    result = fit([req("urgent", slots=2, priority=10)], [agent("a", 3, free=0)], victims)
    assert result.preemptions == ["y", "x"]


def test_a_victim_is_named_once_and_only_for_a_better_priority() -> None:
    """Requests come in priority order, so each takes the next worst victims; one of priority
    60 may not take the priority-50 victim the first left."""
    result = fit(
        [req("p10", priority=10), req("p60", priority=60), req("p20", priority=20)],
        [agent("a", 2, free=0)],
        [
            running("v50", 1, priority=50, preemptible=True),
            running("v80", 1, priority=80, preemptible=True),
        ],
    )
    assert result.preemptions == ["v80", "v50"]
    assert sorted(result.waiting) == ["p10", "p20", "p60"]
