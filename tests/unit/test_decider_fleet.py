"""Table tests of the fleet rules (issue 16) on the pure decider, with a fixed clock: break-even
idle (``max_idle_agent_period: auto``), boot racing (``boot_hedge``), the bounded history the
loop feeds them, and the config that selects them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from provisioner.config import AWSProviderConfig, ProviderConfig
from provisioner.decider import ScaleDecider
from provisioner.forecast import forecast
from provisioner.history import MAX_SEEN, HistoryRecorder
from provisioner.idle_policy import BOOTS_USED, DEFAULT_BOOT_S, HORIZON, WINDOW, BreakEven
from provisioner.types import (
    AgentInfo,
    Backoff,
    Decision,
    Demand,
    Market,
    Offer,
    PoolHistory,
    PoolSnapshot,
)
from tests.unit.test_decider import NOW, PENDING, agent, ago, instance, offer

# A steady pool: one slot arrives every minute, 30 s past each minute, for the last 2 h. From
# any whole minute, the r-th slot arrives in 60 r - 30 s.
STEADY = PoolHistory(
    arrivals=tuple(
        (NOW - WINDOW + timedelta(seconds=30 + 60 * k), 1)
        for k in range(int(WINDOW.total_seconds() // 60))
    ),
    since=NOW - timedelta(hours=3),
)
QUIET = PoolHistory(since=NOW - timedelta(hours=3))  # observed for 3 h, nothing arrived


def auto(**fields: Any) -> ProviderConfig:
    return ProviderConfig.model_validate(
        {"type": "local", "max_idle_agent_period": "auto", "boot_hedge": 0, **fields}
    )


def decide(cfg: ProviderConfig, history: PoolHistory = PoolHistory(), **snapshot: Any) -> Decision:
    snapshot.setdefault("offers", (offer(),))
    for name in ("pending", "instances", "agents", "offers", "backoffs"):
        snapshot[name] = tuple(snapshot.get(name, ()))
    return ScaleDecider().decide(PoolSnapshot("gpu", history=history, **snapshot), cfg, NOW)


# ---- break-even keep periods -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "rank", "keep_s", "learned"),
    [
        # Ski rental without history: keep for what a boot costs, 2 × the boot time.
        pytest.param(PoolHistory(), 1, 2 * DEFAULT_BOOT_S, False, id="nothing known"),
        pytest.param(PoolHistory(boot_seconds=(60, 100)), 3, 160, False, id="boots known"),
        pytest.param(
            PoolHistory(since=NOW - timedelta(minutes=40)), 1, 240, False, id="too short to learn"
        ),
        # Learned: keep while the wait for the r-th slot (60 r - 30 s) is under a boot (240 s).
        pytest.param(STEADY, 1, 30, True, id="steady, first idle slot"),
        pytest.param(STEADY, 4, 210, True, id="steady, 4th idle slot"),
        pytest.param(STEADY, 5, 0, True, id="steady, 5th: a boot is cheaper"),
        pytest.param(QUIET, 1, 0, True, id="nothing arrives"),
    ],
)
def test_break_even_keep_period(
    history: PoolHistory, rank: int, keep_s: float, learned: bool
) -> None:
    rule = BreakEven(history, NOW)
    assert rule.learned is learned
    assert rule.keep(rank) == timedelta(seconds=keep_s)


def test_long_gaps_are_kept_up_to_the_horizon_when_a_boot_is_dear() -> None:
    # Boots of 20 min: every arrival within the 30 min horizon is worth waiting for.
    history = PoolHistory(STEADY.arrivals, (1200.0,), STEADY.since)
    assert BreakEven(history, NOW).keep(20) == timedelta(seconds=60 * 20 - 30)
    assert BreakEven(history, NOW).keep(200) <= HORIZON


# ---- the decider with auto ---------------------------------------------------------------------


def test_auto_without_history_drains_after_twice_the_boot_time() -> None:
    instances = [instance("i1"), instance("i2")]
    agents = [agent("i1", idle=5), agent("i2", idle=3)]
    decision = decide(auto(), instances=instances, agents=agents)
    assert [(d.agent_id, d.reason) for d in decision.drains] == [
        (
            "agent-i1",
            "idle for 5m (max_idle_agent_period auto: 4m with 2 slots idle, boot ~2m, "
            "2 × boot, no history yet)",
        )
    ]


def test_auto_ranks_idle_agents_newest_first_and_keeps_those_work_will_reach() -> None:
    instances = [instance("a"), instance("b"), instance("c")]
    agents = [agent("a", idle=20 / 60), agent("b", idle=80 / 60), agent("c", idle=5)]
    decision = decide(auto(), STEADY, instances=instances, agents=agents)
    # a: 1 slot deep, keep 30 s; b: 2 deep, keep 90 s; c: 3 deep, keep 150 s.
    assert [(d.agent_id, d.reason) for d in decision.drains] == [
        (
            "agent-c",
            "idle for 5m (max_idle_agent_period auto: 2m30s with 3 slots idle, boot ~2m, "
            "learned from the last 2h)",
        )
    ]


@pytest.mark.parametrize(
    ("cfg", "agents", "pending", "drained", "terminated"),
    [
        pytest.param(auto(), [agent("i1", idle=3, draining=True)], [], [], ["i1"], id="drained"),
        pytest.param(auto(), [agent("i1", idle=10)], [Demand("j", 1)], [], [], id="work waits"),
        pytest.param(auto(min_instances=1), [agent("i1", idle=10)], [], [], [], id="minimum"),
        pytest.param(auto(), [agent("i1")], [], [], [], id="busy"),
        pytest.param(
            auto(max_idle_agent_period="off"), [agent("i1", idle=600)], [], [], [], id="off"
        ),
    ],
)
def test_auto_respects_the_other_rules(
    cfg: ProviderConfig,
    agents: list[AgentInfo],
    pending: list[Demand],
    drained: list[str],
    terminated: list[str],
) -> None:
    decision = decide(cfg, QUIET, instances=[instance("i1")], agents=agents, pending=pending)
    assert [d.agent_id for d in decision.drains] == drained
    assert [t.instance_id for t in decision.terminations] == terminated


# ---- boot racing -------------------------------------------------------------------------------


def race(hedge: float, **fields: Any) -> ProviderConfig:
    return auto(boot_hedge=hedge, **fields)


@pytest.mark.parametrize(
    ("cfg", "snapshot", "launched", "cancelled"),
    [
        pytest.param(race(1), dict(pending=[Demand("j", 1)]), 2, [], id="one job, two boots"),
        pytest.param(
            race(0.5, max_instances=10),
            dict(pending=[Demand("g", 4, single_agent=False)]),
            6,
            [],
            id="gang of 4: 6 boots",
        ),
        pytest.param(
            race(1),
            dict(
                pending=[Demand("j", 1)],
                instances=[instance("s1", 1, PENDING), instance("s2", 0.5, PENDING)],
            ),
            0,
            [],
            id="already racing",
        ),
        pytest.param(
            race(1),
            dict(instances=[instance("s1", 1, PENDING), instance("s2", 0.5, PENDING)]),
            0,
            ["s2", "s1"],
            id="work started: cancel newest first",
        ),
        pytest.param(
            race(1, min_instances=1),
            dict(instances=[instance("s1", 1, PENDING), instance("s2", 0.5, PENDING)]),
            0,
            ["s2"],
            id="never below the minimum",
        ),
        pytest.param(
            race(1),
            dict(pending=[Demand("j", 1)], instances=[instance("i1")], agents=[agent("i1", 0)]),
            0,
            [],
            id="an idle agent takes it",
        ),
        pytest.param(
            race(1, max_instances=1), dict(pending=[Demand("j", 1)]), 1, [], id="max_instances"
        ),
    ],
)
def test_boot_race(
    cfg: ProviderConfig, snapshot: dict[str, Any], launched: int, cancelled: list[str]
) -> None:
    decision = decide(cfg, QUIET, **snapshot)
    assert sum(launch.count for launch in decision.launches) == launched
    assert [t.instance_id for t in decision.terminations] == cancelled


def test_boot_race_reasons() -> None:
    decision = decide(race(1), pending=[Demand("j", 1)])
    assert decision.launches[0].reason == (
        "1 slot pending for job j; no idle capacity; racing 2 boots for 1 instance (boot_hedge 1)"
    )
    decision = decide(race(1), instances=[instance("s1", 1, PENDING)])
    assert decision.terminations[0].reason == (
        "boot race: 1 instance starting where 0 are needed (boot_hedge 1)"
    )


# ---- the history the loop keeps ------------------------------------------------------------------


def test_history_counts_each_arrival_and_boot_once_and_forgets_the_old() -> None:
    recorder = HistoryRecorder(since=ago(200))
    booting = instance("i1", launched=2, state=PENDING)
    recorder.observe(ago(150), [Demand("old", 4)], [booting], [])
    recorder.observe(ago(1), [Demand("j", 1)], [booting], [])
    recorder.observe(NOW, [Demand("j", 1), Demand("k", 2)], [booting], [agent("i1", idle=0)])
    recorder.observe(NOW, [Demand("k", 2)], [booting], [agent("i1", idle=0)])
    history = recorder.history(NOW)
    assert history.arrivals == ((ago(1), 1), (NOW, 2))  # "old" fell out of the 2 h window
    assert history.boot_seconds == (120.0,)
    assert history.since == ago(200)
    assert recorder.history(NOW) is history  # unchanged: no new tuple per pass


def test_history_is_bounded() -> None:
    recorder = HistoryRecorder(since=ago(60))
    for n in range(BOOTS_USED + 5):
        recorder.booted(n)
    for n in range(MAX_SEEN + 10):
        recorder.observe(NOW, [Demand(f"j{n}", 1)], [], [])
    assert len(recorder.history(NOW).boot_seconds) == BOOTS_USED
    assert len(recorder._jobs) == MAX_SEEN


# ---- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("auto", "auto"), ("AUTO", "auto"), ("20m", timedelta(minutes=20)), ("off", None)],
)
def test_max_idle_agent_period_values(value: str, parsed: object) -> None:
    assert ProviderConfig(type="local", max_idle_agent_period=value).max_idle_agent_period == parsed


def test_new_pools_default_to_auto_and_race_one_spare() -> None:
    pool = ProviderConfig(type="local")
    assert (pool.max_idle_agent_period, pool.boot_hedge) == ("auto", 1.0)
    assert pool.model_dump(mode="json")["max_idle_agent_period"] == "auto"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_idle_agent_period": "soon"}, "expected 'auto', or a number of seconds"),
        ({"boot_hedge": -1}, "boot_hedge"),
        ({"boot_hedge": 5}, "boot_hedge"),
    ],
)
def test_bad_fleet_settings_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ProviderConfig.model_validate({"type": "local", **fields})


# ---- mixed instance types and the budget cap ---------------------------------------------------

SMALL = Offer("g5.xlarge", "us-east-1a", Market.ON_DEMAND, 1.0, 1)
LARGE = Offer("g5.12xlarge", "us-east-1a", Market.ON_DEMAND, 5.0, 4)
LARGE_B = Offer("g5.12xlarge", "us-east-1b", Market.ON_DEMAND, 5.5, 4)


def launches(decision: Decision) -> list[tuple[str, str | None, int]]:
    return [(x.offer.instance_type, x.offer.zone, x.count) for x in decision.launches]


@pytest.mark.parametrize(
    ("pending", "offers", "backoffs", "expected"),
    [
        pytest.param([Demand("j", 1)], [SMALL, LARGE], [], [("g5.xlarge", "us-east-1a", 1)]),
        pytest.param(
            [Demand("c", 2)], [SMALL, LARGE], [], [("g5.12xlarge", "us-east-1a", 1)], id="2-slot"
        ),
        pytest.param(
            [Demand("c", 2), Demand("j", 1)],
            [SMALL, LARGE],
            [],
            [("g5.12xlarge", "us-east-1a", 1)],
            id="the 1-slot job shares the 4-slot instance",
        ),
        pytest.param(
            [Demand("g", 8, single_agent=False)],
            [Offer("g5.xlarge", "us-east-1a", Market.ON_DEMAND, 1.5, 1), LARGE],
            [],
            [("g5.12xlarge", "us-east-1a", 2)],
            id="gang: 2 × 4 slots cheaper than 8 × 1",
        ),
        pytest.param(
            [Demand("c", 2)],
            [SMALL, LARGE, LARGE_B],
            [Backoff(LARGE.key, NOW + timedelta(minutes=1), 1, "capacity")],
            [("g5.12xlarge", "us-east-1b", 1)],
            id="capacity falls through to the next zone",
        ),
    ],
)
def test_mixed_pool_fits_each_job_to_the_cheapest_type_that_holds_it(
    pending: list[Demand], offers: list[Offer], backoffs: list[Backoff], expected: list[Any]
) -> None:
    decision = decide(auto(), QUIET, pending=pending, offers=offers, backoffs=backoffs)
    assert launches(decision) == expected


def test_mixed_pool_explains_the_choice_and_what_can_never_fit() -> None:
    decision = decide(auto(), QUIET, pending=[Demand("c", 2)], offers=[SMALL, LARGE])
    assert decision.launches[0].reason == (
        "2 slots pending for job c; no idle capacity; g5.12xlarge: the cheapest type that holds "
        "2 slots on one agent ($5.000/h)"
    )
    decision = decide(auto(), QUIET, pending=[Demand("n", 8)], offers=[SMALL, LARGE])
    assert decision.launches == []
    assert decision.status == (
        "job n can never fit: 8 slots on one agent, the largest instance type has 4"
    )


def test_mixed_pool_races_boots_per_type() -> None:
    cfg = auto(boot_hedge=1, max_instances=10)
    decision = decide(cfg, QUIET, pending=[Demand("c", 2), Demand("g", 1)], offers=[SMALL, LARGE])
    # The 1-slot job fits on the 4-slot instance launched for the command: one instance, raced.
    assert launches(decision) == [("g5.12xlarge", "us-east-1a", 2)]


@pytest.mark.parametrize(
    ("cap", "running", "launched", "note"),
    [
        pytest.param(None, 0, 3, "", id="no cap"),
        pytest.param(10.0, 0, 3, "", id="under the cap"),
        pytest.param(2.5, 0, 2, "budget cap $2.5/h reached ($2.00/h running)", id="cut"),
        pytest.param(2.0, 2, 0, "budget cap $2/h reached ($2.00/h running)", id="spent already"),
    ],
)
def test_budget_cap(cap: float | None, running: int, launched: int, note: str) -> None:
    cfg = auto(max_cost_per_hour=cap, max_instances=10)
    busy = [instance(f"b{n}") for n in range(running)]
    agents = [agent(f"b{n}") for n in range(running)]
    decision = decide(
        cfg, QUIET, pending=[Demand(f"j{n}", 1) for n in range(3)], instances=busy, agents=agents
    )
    assert sum(x.count for x in decision.launches) == launched
    assert (note in decision.status) if note else "budget" not in decision.status


def test_budget_cap_in_a_mixed_pool_counts_each_type_at_its_price() -> None:
    cfg = auto(max_cost_per_hour=5.5)
    decision = decide(
        cfg,
        QUIET,
        pending=[Demand("c", 2), Demand("j", 1), Demand("k", 1), Demand("l", 1)],
        offers=[SMALL, LARGE],
    )
    # The 4-slot instance ($5/h) holds the command and two jobs; the 1-slot instance ($1/h)
    # for the last job would break the cap.
    assert launches(decision) == [("g5.12xlarge", "us-east-1a", 1)]
    assert "budget cap $5.5/h reached ($5.00/h running)" in decision.status


def test_instance_types_config() -> None:
    aws = {"type": "aws", "image_id": "ami-x"}
    pool = AWSProviderConfig.model_validate({**aws, "instance_types": ["g5.xlarge", "g5.12xlarge"]})
    assert pool.types == ["g5.xlarge", "g5.12xlarge"]
    assert pool.instance_type == "g5.xlarge"
    assert ProviderConfig(type="local").types == ["local"]
    with pytest.raises(ValidationError, match="instance_slots: applies to one instance_type"):
        AWSProviderConfig.model_validate(
            {**aws, "instance_types": ["g5.xlarge", "g5.2xlarge"], "instance_slots": 2}
        )
    with pytest.raises(ValidationError, match="instance_types: each type once"):
        AWSProviderConfig.model_validate({**aws, "instance_types": ["g5.xlarge", "g5.xlarge"]})
    with pytest.raises(ValidationError, match="instance_type"):
        AWSProviderConfig.model_validate(aws)
    with pytest.raises(ValidationError, match="max_cost_per_hour"):
        ProviderConfig.model_validate({"type": "local", "max_cost_per_hour": 0})


# ---- the predicted warm pool -------------------------------------------------------------------

# 6 slots in the last 30 min (one every 5 min): 0.2 slots/min; a 2 min boot: 0.4 → no slot warm.
# 30 slots in the last 30 min: 1 slot/min → 2 slots forecast for the next 2 minutes.
BUSY = PoolHistory(
    arrivals=tuple((NOW - timedelta(seconds=60 * k + 30), 1) for k in range(30)),
    since=NOW - timedelta(hours=3),
)


def warm(cap: float, **fields: Any) -> ProviderConfig:
    return auto(max_warm_cost_per_hour=cap, max_instances=10, **fields)


@pytest.mark.parametrize(
    ("history", "last_week", "slots"),
    [
        pytest.param(PoolHistory(), None, 0, id="nothing known"),
        pytest.param(BUSY, None, 2, id="recent pace"),
        pytest.param(BUSY, 0, 1, id="last week was quiet at this hour"),
        pytest.param(QUIET, 120, 2, id="last week's rush at this hour"),
    ],
)
def test_forecast(history: PoolHistory, last_week: int | None, slots: int) -> None:
    history = PoolHistory(history.arrivals, (), history.since, last_week)
    predicted = forecast(history, NOW, 120)
    assert predicted.slots == slots
    assert (
        predicted.reason()
        == f"warm: {slots} slot{'' if slots == 1 else 's'} forecast for 12:00–12:02"
    )


@pytest.mark.parametrize(
    ("cfg", "idle", "launched", "drained"),
    [
        pytest.param(warm(0), [], 0, [], id="off"),
        pytest.param(warm(5), [], 2, [], id="launch 2 warm"),
        pytest.param(warm(1), [], 1, [], id="cap: 1 instance an hour"),
        pytest.param(warm(5), [("a", 10), ("b", 10), ("c", 10)], 0, ["agent-a"], id="keep 2"),
        pytest.param(warm(5), [("a", 10)], 1, [], id="keep 1, launch 1"),
    ],
)
def test_warm_pool(
    cfg: ProviderConfig, idle: list[tuple[str, float]], launched: int, drained: list[str]
) -> None:
    # Agents a, b, c idle 10 min: without the forecast auto would drain all (history is quiet
    # at rank 3 and beyond; 2 × boot without boots = 4 min).
    instances = [instance(name) for name, _ in idle]
    agents = [agent(name, idle=minutes) for name, minutes in idle]
    history = PoolHistory(BUSY.arrivals, (120.0,), BUSY.since)
    decision = decide(cfg, history, instances=instances, agents=agents)
    warm_launches = [x for x in decision.launches if x.reason.startswith("warm: ")]
    assert sum(x.count for x in warm_launches) == launched
    assert all(x.reason == "warm: 2 slots forecast for 12:00–12:02" for x in warm_launches)
    if cfg.max_warm_cost_per_hour:
        assert sorted(d.agent_id for d in decision.drains) == drained


def test_instances_starting_for_the_warm_pool_are_not_cancelled_as_boot_racers() -> None:
    history = PoolHistory(BUSY.arrivals, (120.0,), BUSY.since)
    starting = [instance("w1", 1, PENDING), instance("w2", 1, PENDING)]
    decision = decide(warm(5, boot_hedge=1), history, instances=starting)
    assert decision.terminations == [] and decision.launches == []
    decision = decide(warm(0, boot_hedge=1), history, instances=starting)
    assert [t.instance_id for t in decision.terminations] == ["w2", "w1"]


def test_a_partial_gang_accounts_its_idle_agents_in_the_status() -> None:
    instances = [instance("a"), instance("b"), instance("s", 1, PENDING)]
    agents = [agent("a", idle=1), agent("b", idle=1)]
    decision = decide(
        auto(),
        QUIET,
        pending=[Demand("g", 3, single_agent=False)],
        instances=instances,
        agents=agents,
    )
    assert decision.launches == [] and decision.drains == []
    assert decision.status == "job g waits for 3 slots: 2 idle slots held meanwhile"


def test_ranks_past_the_first_not_worth_keeping_are_not_kept() -> None:
    rule = BreakEven(STEADY, NOW)
    assert rule.keep(5) == timedelta(0)
    assert rule.keep(9) == timedelta(0)  # deeper: waits longer at every sample point
    assert rule.keep(4) == timedelta(seconds=210)  # shallower ranks are still sampled
