"""Table tests of the scale decider with a fixed clock: one test, or case, per rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from provisioner.config import ProviderConfig
from provisioner.decider import ScaleDecider, human_duration
from provisioner.types import (
    AgentInfo,
    Backoff,
    Decision,
    Demand,
    Instance,
    InstanceState,
    Market,
    Offer,
    PoolSnapshot,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SPOT, OD = Market.SPOT, Market.ON_DEMAND
PENDING, RUNNING = InstanceState.PENDING, InstanceState.RUNNING


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def later(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def config(**fields: Any) -> ProviderConfig:
    """A pool with the fixed rules these tests are about: a 20m idle period, no boot racing
    (``auto`` and ``boot_hedge`` have their own tests in test_decider_fleet.py)."""
    fixed = {"max_idle_agent_period": "20m", "boot_hedge": 0}
    return ProviderConfig.model_validate({"type": "local", **fixed, **fields})


def offer(market: Market = OD, zone: str = "us-east-1a", price: float = 1, slots: int = 1) -> Offer:
    return Offer("g5.xlarge", zone, market, price, slots)


def instance(id: str, launched: float = 30, state: InstanceState = RUNNING) -> Instance:
    return Instance(id, "g5.xlarge", "us-east-1a", OD, 1.0, 1, state, ago(launched))


def agent(id: str, idle: float | None = None, draining: bool = False, away: float | None = None):
    """``idle``/``away``: minutes before NOW since when the agent is idle / disconnected."""
    since = {name: None if m is None else ago(m) for name, m in (("idle", idle), ("away", away))}
    return AgentInfo(f"agent-{id}", id, 1, since["idle"], draining, since["away"])


def backoff(market: Market, zone: str, until: datetime) -> Backoff:
    return Backoff(offer(market, zone).key, until, 1, "InsufficientInstanceCapacity")


def gang(slots: int, job: str = "g") -> Demand:
    return Demand(job, slots, single_agent=False)


def decide(cfg: ProviderConfig | None = None, **snapshot: Any) -> Decision:
    snapshot.setdefault("offers", (offer(),))
    for name in ("pending", "instances", "agents", "offers", "backoffs"):
        snapshot[name] = tuple(snapshot.get(name, ()))
    return ScaleDecider().decide(PoolSnapshot("gpu", **snapshot), cfg or config(), NOW)


def launched(decision: Decision) -> int:
    return sum(launch.count for launch in decision.launches)


def terminated(decision: Decision) -> list[tuple[str, str]]:
    return [(t.instance_id, t.reason) for t in decision.terminations]


# Demand and capacity

ONE = [Demand("j1", 1)]
I1 = [instance("i1")]
STARTING = [instance("i1", 1, PENDING), instance("i2", 1)]
FFD = [Demand("a", 1), Demand("b", 2), Demand("c", 3), Demand("d", 2)]
STRAY = AgentInfo("stray", "i-unknown", 1, ago(600))


@pytest.mark.parametrize(
    ("snapshot", "count"),
    [
        pytest.param(dict(pending=ONE, instances=I1, agents=[agent("i1", idle=1)]), 0, id="idle"),
        pytest.param(dict(pending=ONE, instances=I1, agents=[agent("i1")]), 1, id="busy"),
        pytest.param(
            dict(
                pending=[gang(2)],
                instances=[instance("i1"), instance("i2")],
                agents=[agent("i1", idle=1, draining=True), agent("i2", idle=1, away=1)],
            ),
            2,
            id="draining and disconnected agents are not capacity",
        ),
        pytest.param(dict(pending=ONE, instances=[instance("i1", 2, PENDING)]), 0, id="pending"),
        pytest.param(dict(pending=ONE, instances=[instance("i1", 2)]), 0, id="running, no agent"),
        pytest.param(dict(pending=[gang(2)], instances=STARTING), 0, id="exactly starting"),
        pytest.param(dict(pending=[gang(3)], instances=STARTING), 1, id="one over starting"),
        # First-fit decreasing: 3+1 and 2+2; in arrival order it would take three.
        pytest.param(dict(pending=FFD, offers=[offer(slots=4)]), 2, id="first-fit decreasing"),
        pytest.param(dict(pending=[gang(10)], offers=[offer(slots=4)]), 3, id="gang spans ceil"),
        pytest.param(dict(pending=ONE, agents=[STRAY]), 1, id="agent without instance"),
    ],
)
def test_launch_count(snapshot: dict[str, Any], count: int) -> None:
    assert launched(decide(**snapshot)) == count


def test_pending_demand_without_capacity_launches_with_a_reason() -> None:
    decision = decide(pending=[gang(2, "j7")])
    assert launched(decision) == 2
    assert decision.launches[0].reason == "2 slots pending for job j7; no idle capacity"
    assert decision.status == "launching 2 × g5.xlarge on-demand in us-east-1a"


def test_single_agent_demand_larger_than_an_instance_never_launches() -> None:
    decision = decide(pending=[Demand("j9", 8)], offers=[offer(slots=4)])
    assert decision.launches == []
    assert decision.status == "job j9 can never fit: 8 slots on one agent, an instance has 4"


def test_launch_reason_names_several_jobs_and_the_free_capacity() -> None:
    decision = decide(pending=[Demand(f"j{n}", 1) for n in range(1, 6)], instances=STARTING[:1])
    assert launched(decision) == 4
    assert decision.launches[0].reason == (
        "4 slots pending for jobs j2, j3, j4 and 1 more; 1 slot idle or starting"
    )


@pytest.mark.parametrize(("slots", "count"), [(1, 1), (2, 3), (8, 12)])
def test_gang_spare_adds_instances_for_multi_instance_jobs_only(slots: int, count: int) -> None:
    snapshot = PoolSnapshot("gpu", pending=(gang(slots),), offers=(offer(),))
    decision = ScaleDecider(gang_spare=0.5).decide(snapshot, config(max_instances=20), NOW)
    assert launched(decision) == count


# Minimum and maximum


def test_never_above_max_instances() -> None:
    three = [instance(f"i{n}") for n in range(3)]
    decision = decide(pending=[gang(4)], instances=three, agents=[agent(i.id) for i in three])
    assert launched(decision) == 2
    assert decision.status == (
        "launching 2 × g5.xlarge on-demand in us-east-1a; at max_instances 5: 2 slots wait"
    )


def test_max_zero_never_launches() -> None:
    decision = decide(config(max_instances=0), pending=[gang(3)])
    assert decision.launches == []
    assert decision.status == "at max_instances 0: 3 slots wait"


def test_terminating_instances_count_against_max() -> None:
    decision = decide(
        config(max_instances=1),
        pending=ONE,
        instances=[instance("i1", 1, InstanceState.TERMINATING)],
    )
    assert decision.launches == []


def test_min_instances_launched_without_demand() -> None:
    decision = decide(config(min_instances=2))
    assert [(la.count, la.reason) for la in decision.launches] == [(2, "min_instances 2 (0 live)")]


def test_min_equals_max_keeps_idle_agents() -> None:
    decision = decide(
        config(min_instances=2, max_instances=2),
        instances=[instance("i1"), instance("i2")],
        agents=[agent("i1", idle=60), agent("i2", idle=60, draining=True)],
    )
    assert (decision.launches, decision.drains, decision.terminations) == ([], [], [])


def test_idle_terminations_stop_at_min_instances_longest_idle_first() -> None:
    decision = decide(
        config(min_instances=1),
        instances=[instance("i1"), instance("i2"), instance("i3")],
        agents=[agent(i, idle=m, draining=True) for i, m in (("i1", 30), ("i2", 50), ("i3", 40))],
    )
    assert [i for i, _ in terminated(decision)] == ["i2", "i3"]


# Offers, backoff and spot fallback

SPOT_CONFIG = config(spot=True)
SPOT_ONLY = config(spot=True, spot_fallback={"policy": "spot_only"})


def test_spot_first_cheapest_across_zones() -> None:
    offers = [offer(OD, price=1.0), offer(SPOT, price=0.5), offer(SPOT, "us-east-1b", 0.4)]
    decision = decide(SPOT_CONFIG, pending=ONE, offers=offers)
    assert decision.launches[0].offer == offer(SPOT, "us-east-1b", 0.4)
    assert decision.status == "launching 1 × g5.xlarge spot in us-east-1b"


def test_backed_off_offer_is_skipped_for_the_next_zone() -> None:
    offers = [offer(SPOT, price=0.4), offer(SPOT, "us-east-1b", 0.5), offer(OD)]
    decision = decide(
        SPOT_CONFIG, pending=ONE, offers=offers, backoffs=[backoff(SPOT, "us-east-1a", later(1))]
    )
    assert decision.launches[0].offer.zone == "us-east-1b"
    assert not decision.spot_unavailable


def test_backoff_expiring_exactly_now_is_usable_again() -> None:
    assert launched(decide(pending=ONE, backoffs=[backoff(OD, "us-east-1a", NOW)])) == 1


def test_on_demand_backed_off_says_until_when() -> None:
    decision = decide(pending=ONE, backoffs=[backoff(OD, "us-east-1a", later(4))])
    assert decision.launches == []
    assert decision.status == "on-demand capacity unavailable in us-east-1a until 12:04"


def test_spot_max_price_excludes_dearer_spot_offers() -> None:
    offers = [offer(SPOT, price=0.5), offer(SPOT, "us-east-1b", 0.3), offer(OD)]
    decision = decide(config(spot=True, spot_max_price=0.35), pending=ONE, offers=offers)
    assert decision.launches[0].offer.zone == "us-east-1b"


def test_spot_above_max_price_everywhere_is_unavailable() -> None:
    cfg = config(spot=True, spot_max_price=0.2, spot_fallback={"policy": "spot_only"})
    decision = decide(cfg, pending=ONE, offers=[offer(SPOT, price=0.3), offer(OD)])
    assert decision.launches == [] and decision.spot_unavailable
    assert "g5.xlarge spot in us-east-1a at $0.300/h is over $0.200/h" in decision.status


def test_spot_max_price_defaults_to_the_on_demand_price() -> None:
    decision = decide(SPOT_ONLY, pending=ONE, offers=[offer(SPOT, price=1.2), offer(OD, price=1)])
    assert decision.launches == []


def test_spot_only_never_buys_on_demand() -> None:
    decision = decide(
        SPOT_ONLY,
        pending=ONE,
        offers=[offer(SPOT, price=0.4), offer(OD)],
        backoffs=[backoff(SPOT, "us-east-1a", later(4))],
        spot_unavailable_since=ago(60),
    )
    assert decision.launches == []
    assert decision.status == "spot capacity unavailable in us-east-1a until 12:04 (spot_only)"


SPOT_DOWN = {
    "pending": ONE,
    "offers": [offer(SPOT, price=0.4), offer(SPOT, "us-east-1b", 0.4), offer(OD)],
    "backoffs": [backoff(SPOT, "us-east-1a", later(4)), backoff(SPOT, "us-east-1b", later(5))],
}


def test_spot_then_on_demand_waits_for_the_delay() -> None:
    decision = decide(SPOT_CONFIG, spot_unavailable_since=ago(0), **SPOT_DOWN)
    assert decision.launches == [] and decision.spot_unavailable
    assert decision.status == (
        "spot capacity unavailable in us-east-1a until 12:04, in us-east-1b until 12:05, "
        "trying on-demand at 12:02"
    )


def test_spot_then_on_demand_without_a_since_starts_the_delay_now() -> None:
    decision = decide(SPOT_CONFIG, **SPOT_DOWN)
    assert decision.launches == [] and decision.spot_unavailable


def test_spot_then_on_demand_falls_back_once_the_delay_has_passed() -> None:
    decision = decide(SPOT_CONFIG, spot_unavailable_since=ago(2), **SPOT_DOWN)
    assert decision.launches[0].offer.market is OD
    assert decision.status.startswith("launching 1 × g5.xlarge on-demand in us-east-1a; spot")
    assert decision.status.endswith("trying on-demand")


def test_on_demand_policy_ignores_spot() -> None:
    cfg = config(spot=True, spot_fallback={"policy": "on_demand"})
    decision = decide(cfg, pending=ONE, offers=[offer(SPOT, price=0.1), offer(OD)])
    assert decision.launches[0].offer.market is OD


def test_spot_false_buys_on_demand_only() -> None:
    decision = decide(pending=ONE, offers=[offer(SPOT, price=0.1), offer(OD)])
    assert decision.launches[0].offer.market is OD and not decision.spot_unavailable


# Idle agents


def test_idle_agent_is_drained_before_terminate() -> None:
    decision = decide(instances=I1, agents=[agent("i1", idle=20)])
    assert decision.terminations == []
    assert [(d.agent_id, d.reason) for d in decision.drains] == [
        ("agent-i1", "idle for 20m (max_idle_agent_period 20m)")
    ]


def test_drained_agent_still_idle_is_terminated() -> None:
    decision = decide(instances=I1, agents=[agent("i1", idle=21, draining=True)])
    assert terminated(decision) == [("i1", "idle for 21m (max_idle_agent_period 20m)")]


@pytest.mark.parametrize(
    ("cfg", "idle", "draining"),
    [
        pytest.param(config(), 19.9, False, id="idle less than the period"),
        pytest.param(config(), None, True, id="draining but still busy"),
        pytest.param(config(max_idle_agent_period="off"), 600, False, id="period off"),
    ],
)
def test_agent_is_kept(cfg: ProviderConfig, idle: float | None, draining: bool) -> None:
    decision = decide(cfg, instances=I1, agents=[agent("i1", idle=idle, draining=draining)])
    assert decision.drains == [] and decision.terminations == []


def test_idle_agent_is_not_drained_while_pending_work_could_use_it() -> None:
    decision = decide(
        config(max_instances=1), pending=[gang(2)], instances=I1, agents=[agent("i1", idle=30)]
    )
    assert decision.drains == []


def test_idle_agent_is_drained_when_pending_work_can_never_use_it() -> None:
    decision = decide(pending=[Demand("big", 2)], instances=I1, agents=[agent("i1", idle=30)])
    assert [d.agent_id for d in decision.drains] == ["agent-i1"]


# Broken instances


def test_instance_whose_agent_never_joined_is_terminated_even_below_min() -> None:
    decision = decide(config(min_instances=1), instances=[instance("i1", launched=20)])
    assert terminated(decision) == [("i1", "agent never joined within 20m")]
    # Replaced in the same pass when max_instances leaves room.
    assert [(la.count, la.reason) for la in decision.launches] == [(1, "min_instances 1 (0 live)")]


def test_broken_instance_at_max_is_replaced_by_a_later_pass() -> None:
    cfg = config(min_instances=1, max_instances=1)
    decision = decide(cfg, instances=[instance("i1", launched=20)])
    assert len(terminated(decision)) == 1 and decision.launches == []


def test_disconnected_agent_instance_is_terminated_even_below_min() -> None:
    decision = decide(config(min_instances=1), instances=I1, agents=[agent("i1", away=5)])
    assert terminated(decision) == [("i1", "disconnected for 5m (max_disconnected_period 5m)")]


def test_briefly_disconnected_agent_is_kept() -> None:
    assert decide(instances=I1, agents=[agent("i1", away=4)]).terminations == []


# Over the maximum

ORDER = ["new-starting", "old-starting", "away", "idle-long", "idle-short", "busy-new"]
LAUNCHED = [("busy-old", 300), ("busy-new", 100), ("idle-short", 200), ("idle-long", 200)]
LAUNCHED += [("away", 200), ("old-starting", 10)]
AGENTS = [agent("busy-old"), agent("busy-new"), agent("idle-short", idle=1)]
AGENTS += [agent("idle-long", idle=2), agent("away", away=1)]


@pytest.mark.parametrize(("max_instances", "count"), [(6, 1), (5, 2), (4, 3), (2, 5), (1, 6)])
def test_over_max_terminates_in_determined_order(max_instances: int, count: int) -> None:
    decision = decide(
        config(max_instances=max_instances),
        instances=[instance(i, minutes) for i, minutes in LAUNCHED]
        + [instance("new-starting", launched=5, state=PENDING)],
        agents=AGENTS,
    )
    expected = [(i, f"over max_instances {max_instances}") for i in ORDER]
    assert terminated(decision) == expected[:count]


# Association, status, purity


def test_agents_without_an_instance_are_never_drained() -> None:
    decision = decide(agents=[STRAY])
    assert decision.drains == [] and decision.terminations == []


def test_agent_is_associated_through_the_instance_agent_id() -> None:
    known = Instance("i1", "g5.xlarge", None, OD, 1.0, 1, RUNNING, ago(60), "a1")
    decision = decide(instances=[known], agents=[AgentInfo("a1", None, 1, ago(30))])
    assert [d.agent_id for d in decision.drains] == ["a1"]


def test_status_of_a_steady_pool() -> None:
    decision = decide(instances=[instance("i1"), instance("i2", 1, PENDING)], agents=[agent("i1")])
    assert decision.status == "2 instances, 1 starting, nothing pending"


def test_same_snapshot_same_decision() -> None:
    assert decide(pending=[gang(3)]) == decide(pending=[gang(3)])


def test_negative_gang_spare_is_refused() -> None:
    with pytest.raises(ValueError, match="gang_spare"):
        ScaleDecider(gang_spare=-1)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (45, "45s"), (1200, "20m"), (1290, "21m30s"), (3900, "1h5m")]
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


# Spot interruptions


def reclaimed(id: str, idle: float | None = None) -> AgentInfo:
    return AgentInfo(f"agent-{id}", id, 1, None if idle is None else ago(idle), interrupting=True)


def test_an_interrupted_instance_counts_as_gone_and_its_work_is_replaced_in_the_same_pass() -> None:
    """The master adds the work still on the reclaimed instance to the demand; the instance is
    neither capacity nor counted against max_instances (the cloud is taking it back)."""
    decision = decide(
        config(max_instances=1),
        pending=[Demand("t1 on reclaimed i-1", 1)],
        instances=[instance("i-1")],
        agents=[reclaimed("i-1")],
    )
    assert launched(decision) == 1 and terminated(decision) == []
    assert "1 slot pending for job t1 on reclaimed i-1" in decision.launches[0].reason


def test_an_interrupted_instance_does_not_count_towards_min_instances() -> None:
    decision = decide(
        config(min_instances=1), instances=[instance("i-1")], agents=[reclaimed("i-1")]
    )
    assert launched(decision) == 1


def test_an_idle_interrupted_instance_is_terminated_at_once() -> None:
    decision = decide(
        config(min_instances=1, max_idle_agent_period="1h"),
        instances=[instance("i-1"), instance("i-2")],
        agents=[reclaimed("i-1", idle=0.1), agent("i-2")],
    )
    assert terminated(decision) == [
        ("i-1", "idle after a spot interruption notice or rebalance recommendation")
    ]
    assert launched(decision) == 0  # i-2 is the pool's one instance
