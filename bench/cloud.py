"""A simulated cloud: instances that boot slowly, launches that fail for want of capacity,
spot instances that are taken back, and a bill.

How it models the world (from ``cloud_profile.json``):

- A launch call fails as a whole with the market's capacity-error probability, independently
  per call and per zone (real capacity shortages are correlated; this is kinder to spot).
  A scenario may add spot outages: windows in which every spot launch fails, in every zone
  (instances already running are left alone).
- Boot time, from the launch call until the agent has registered, is lognormal with the
  profile's median and p95. The instance is ``PENDING`` until then, and ``RUNNING`` with its
  agent joined after.
- A spot instance is interrupted after an exponential time with the profile's hazard per
  instance-hour, counted from launch. The notice comes first; the cloud reclaims the instance
  ``notice_seconds`` later. Between the two it is ``TERMINATING``.
- Billing runs from the launch call to termination, rounded up to the granularity, with the
  minimum charge (EC2 Linux: per second, 60 s minimum). Starting earlier than AWS does (it
  bills from ``running``) makes every launch cost a little more than it would.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bench.workload import CloudProfile, billed_seconds
from provisioner.types import AgentInfo, Instance, InstanceState, Market, Offer


class CapacityError(Exception):
    """The simulated ``InsufficientInstanceCapacity``."""


@dataclass(eq=False)
class SimAgent:
    id: str
    slots: int
    idle_since_s: float | None
    running: dict[str, int] = field(default_factory=dict)  # job id → slots it holds here
    draining: bool = False
    _info: tuple[object, AgentInfo] | None = None

    @property
    def free_slots(self) -> int:
        return self.slots - sum(self.running.values())


@dataclass(eq=False)
class SimInstance:
    id: str
    offer: Offer
    launched_s: float
    boot_s: float  # when the agent registers (absolute)
    interrupt_s: float  # when the spot notice comes (absolute; inf on on-demand)
    state: InstanceState = InstanceState.PENDING
    agent: SimAgent | None = None
    end_s: float | None = None
    _seen: tuple[object, Instance] | None = None

    def seen(self, epoch: datetime) -> Instance:
        """What the provider would list for this instance (rebuilt only when it changed)."""
        key = (self.state, self.agent)
        if self._seen is None or self._seen[0] != key:
            self._seen = (key, self._listed(epoch))
        return self._seen[1]

    def _listed(self, epoch: datetime) -> Instance:
        return Instance(
            id=self.id,
            instance_type=self.offer.instance_type,
            zone=self.offer.zone,
            market=self.offer.market,
            price_per_hour=self.offer.price_per_hour,
            slots=self.offer.slots,
            state=self.state,
            launched_at=epoch + timedelta(seconds=self.launched_s),
            agent_id=self.agent.id if self.agent else None,
        )


def agent_info(agent: SimAgent, instance_id: str, epoch: datetime) -> AgentInfo:
    """What the master would report for this agent (rebuilt only when it changed)."""
    key = (agent.idle_since_s, agent.draining)
    if agent._info is None or agent._info[0] != key:
        idle = None if agent.idle_since_s is None else epoch + timedelta(seconds=agent.idle_since_s)
        agent._info = (key, AgentInfo(agent.id, instance_id, agent.slots, idle, agent.draining))
    return agent._info[1]


@dataclass
class Bill:
    cost: float = 0.0
    on_demand_cost: float = 0.0
    paid_slot_s: float = 0.0  # slot-seconds of instance lifetime (before the billing minimum)
    launches: int = 0
    launch_errors: int = 0
    interruptions: int = 0


class SimCloud:
    def __init__(
        self, profile: CloudProfile, seed: int, spot_outages: tuple[tuple[float, float], ...] = ()
    ) -> None:
        self.profile = profile
        self.spot_outages = spot_outages
        self.boot_rng = random.Random(f"{seed}-boot")
        self.capacity_rng = random.Random(f"{seed}-capacity")
        self.spot_rng = random.Random(f"{seed}-spot")
        self.bill = Bill()
        self._next_id = 0

    def launch(self, offer: Offer, count: int, now_s: float) -> list[SimInstance]:
        """Create ``count`` instances, or raise ``CapacityError`` for the whole call."""
        error = (
            self.profile.spot_capacity_error
            if offer.market is Market.SPOT
            else self.profile.on_demand_capacity_error
        )
        if offer.market is Market.SPOT and any(a <= now_s < b for a, b in self.spot_outages):
            error = 1.0
        if self.capacity_rng.random() < error:
            self.bill.launch_errors += 1
            raise CapacityError(f"InsufficientInstanceCapacity for {offer.key} (simulated)")
        mu, sigma = self.profile.boot_lognormal
        created = []
        for _ in range(count):
            self._next_id += 1
            interrupt_s = math.inf
            if offer.market is Market.SPOT and self.profile.spot_hazard_per_hour > 0:
                rate = self.profile.spot_hazard_per_hour / 3600
                interrupt_s = now_s + self.spot_rng.expovariate(rate)
            boot_s = now_s + self.boot_rng.lognormvariate(mu, sigma)
            created.append(SimInstance(f"i-{self._next_id:06d}", offer, now_s, boot_s, interrupt_s))
        self.bill.launches += count
        return created

    def end(self, instance: SimInstance, now_s: float) -> None:
        """The instance is gone: charge it."""
        instance.state = InstanceState.TERMINATED
        instance.end_s = now_s
        run_s = now_s - instance.launched_s
        charged = billed_seconds(
            run_s, self.profile.billing_granularity_s, self.profile.billing_minimum_s
        )
        cost = charged * instance.offer.price_per_hour / 3600
        self.bill.cost += cost
        if instance.offer.market is Market.ON_DEMAND:
            self.bill.on_demand_cost += cost
        self.bill.paid_slot_s += run_s * instance.offer.slots
