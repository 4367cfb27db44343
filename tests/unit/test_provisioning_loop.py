"""The provisioning loop's reaction to cloud failures, with a fake provider and world."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from provisioner.config import ProviderConfig
from provisioner.decider import ScaleDecider
from provisioner.loop import PoolLoop
from provisioner.types import (
    AgentInfo,
    Decision,
    Demand,
    ErrorClass,
    Instance,
    InstanceState,
    LaunchedInstance,
    Market,
    Offer,
    PoolSnapshot,
    ProviderError,
    TerminateResult,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SPOT = Offer("g5.xlarge", "us-east-1a", Market.SPOT, 0.4, 1)
ON_DEMAND = Offer("g5.xlarge", "us-east-1a", Market.ON_DEMAND, 1.0, 1)


class FakeProvider:
    def __init__(self, failures: dict[Market, ErrorClass] | None = None) -> None:
        self.failures = failures or {}
        self.launched: list[tuple[Offer, int]] = []
        self.attempts: list[Market] = []
        self.instances: list[Instance] = []

    def offers(self) -> list[Offer]:
        return [SPOT, ON_DEMAND]

    def list_instances(self) -> list[Instance]:
        return list(self.instances)

    def launch(self, offer: Offer, count: int, client_token: str) -> list[LaunchedInstance]:
        self.attempts.append(offer.market)
        failure = self.failures.get(offer.market)
        if failure is not None:
            raise ProviderError(failure, f"{offer.key}: injected {failure.value}", offer.key)
        self.launched.append((offer, count))
        created = []
        for n in range(count):
            instance_id = f"i-{len(self.instances)}-{n}"
            self.instances.append(
                Instance(
                    instance_id,
                    offer.instance_type,
                    offer.zone,
                    offer.market,
                    offer.price_per_hour,
                    offer.slots,
                    InstanceState.PENDING,
                    NOW,
                )
            )
            created.append(LaunchedInstance(instance_id, offer, NOW))
        return created

    def terminate(self, instance_ids: list[str]) -> list[TerminateResult]:
        return [TerminateResult(i, True) for i in instance_ids]


class FakeWorld:
    def __init__(self, demand: list[Demand]) -> None:
        self.pending = demand
        self.events: list[tuple[str | None, str, str]] = []
        self.interruptions: list[tuple[str, str]] = []

    async def demand(self, pool: str) -> list[Demand]:
        return self.pending

    async def agents(self, pool: str) -> list[AgentInfo]:
        return []

    async def drain(self, agent_id: str, reason: str) -> None:
        self.events.append((agent_id, "drain", reason))

    async def launched(
        self, pool: str, provider: str, instance: LaunchedInstance, reason: str
    ) -> None:
        self.events.append((instance.id, "launched", reason))

    async def terminated(self, pool: str, instance_id: str, reason: str) -> None:
        self.events.append((instance_id, "terminated", reason))

    async def event(self, pool: str, instance_id: str | None, kind: str, reason: str) -> None:
        self.events.append((instance_id, kind, reason))

    async def observed(self, pool: str, provider: str, instances: list[Instance]) -> None:
        return None

    async def interrupted(self, pool: str, agent_id: str, reason: str) -> None:
        self.interruptions.append((agent_id, reason))


def make_loop(provider: FakeProvider, world: FakeWorld, **config: Any) -> PoolLoop:
    # No boot racing: these tests count the launches of the failure handling.
    settings: dict[str, Any] = {
        "type": "local",
        "spot": True,
        "max_instances": 4,
        "boot_hedge": 0,
        **config,
    }
    return PoolLoop("gpu", ProviderConfig(**settings), provider, world, lambda: NOW)


def one_pass(loop: PoolLoop) -> None:
    asyncio.run(loop.run_pass())


def test_spot_capacity_error_backs_off_and_falls_back_in_the_same_pass() -> None:
    provider = FakeProvider({Market.SPOT: ErrorClass.CAPACITY})
    world = FakeWorld([Demand("job", 1)])
    loop = make_loop(provider, world, spot_fallback={"delay": "0s"})
    one_pass(loop)
    assert provider.attempts == [Market.SPOT, Market.ON_DEMAND]
    assert provider.launched == [(ON_DEMAND, 1)]
    backoff = loop.backoffs[SPOT.key]
    assert backoff.until == NOW + timedelta(minutes=1) and backoff.failures == 1
    assert any(kind == "launch_failed:capacity" for _, kind, _ in world.events)


def test_fallback_waits_for_its_delay() -> None:
    provider = FakeProvider({Market.SPOT: ErrorClass.CAPACITY})
    loop = make_loop(provider, FakeWorld([Demand("job", 1)]), spot_fallback={"delay": "2m"})
    one_pass(loop)
    assert provider.launched == []
    assert loop.spot_unavailable_since == NOW
    assert "on-demand" in loop.status.summary


def test_capacity_backoff_doubles_up_to_its_cap_without_overflowing() -> None:
    provider = FakeProvider({Market.SPOT: ErrorClass.CAPACITY})
    loop = make_loop(provider, FakeWorld([Demand("job", 1)]), spot_fallback={"policy": "spot_only"})
    for _ in range(3):
        loop._back_off(SPOT.key, NOW, "no capacity")
    assert loop.backoffs[SPOT.key].until == NOW + timedelta(minutes=4)
    for _ in range(100):
        loop._back_off(SPOT.key, NOW, "no capacity")
    assert loop.backoffs[SPOT.key].until == NOW + timedelta(minutes=30)


def test_config_error_degrades_the_pool_with_the_clouds_message() -> None:
    provider = FakeProvider({Market.ON_DEMAND: ErrorClass.CONFIG})
    loop = make_loop(provider, FakeWorld([Demand("job", 1)]), spot=False)
    one_pass(loop)
    assert loop.status.degraded is not None
    assert "injected config" in loop.status.degraded
    assert provider.attempts == [Market.ON_DEMAND]


def test_quota_backs_off_every_offer_of_the_market() -> None:
    provider = FakeProvider({Market.SPOT: ErrorClass.QUOTA})
    loop = make_loop(provider, FakeWorld([Demand("job", 1)]), spot_fallback={"policy": "spot_only"})
    one_pass(loop)
    assert SPOT.key in loop.backoffs and ON_DEMAND.key not in loop.backoffs
    assert provider.launched == []


def test_throttling_waits_for_a_later_pass_without_counting_a_failure() -> None:
    provider = FakeProvider({Market.ON_DEMAND: ErrorClass.THROTTLE})
    loop = make_loop(provider, FakeWorld([Demand("job", 1)]), spot=False)
    one_pass(loop)
    backoff = loop.backoffs[ON_DEMAND.key]
    assert backoff.failures == 0 and backoff.until == NOW + timedelta(seconds=30)
    assert provider.attempts == [Market.ON_DEMAND]


def test_the_loop_gives_the_decider_its_pools_history() -> None:
    provider = FakeProvider()
    world = FakeWorld([Demand("job", 2)])
    seen: list[PoolSnapshot] = []

    class Recording(ScaleDecider):
        def decide(self, snapshot: PoolSnapshot, config: ProviderConfig, now: datetime) -> Decision:
            seen.append(snapshot)
            return super().decide(snapshot, config, now)

    loop = PoolLoop(
        "gpu", ProviderConfig(type="local"), provider, world, lambda: NOW, decider=Recording()
    )
    one_pass(loop)
    one_pass(loop)  # the same job still pending: one arrival, not two
    assert seen[-1].history.arrivals == ((NOW, 2),)
    assert seen[-1].history.since == NOW
