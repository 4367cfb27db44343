"""The scale decider: what a pool should launch, drain and terminate, and why.

``ScaleDecider.decide(snapshot, config, now)`` is pure: no I/O, no clock reads, no randomness.
The same snapshot at the same ``now`` always gives the same decision, which is what makes it
table-testable and lets ``bench/`` drive it through a simulated week.

What it assumes about the snapshot:

- Every offer of a pool has the same shape (a pool has one ``instance_type``); demand is packed
  onto the ``slots`` of the offer chosen to launch.
- An agent belongs to an instance when ``agent.instance_id`` or ``instance.agent_id`` names the
  other. Agents that cannot be associated with any live instance are ignored (they are not this
  decider's to terminate, and they are not counted as capacity).
- The decider only knows idle vs busy per agent: an idle agent's slots are all free, a busy
  agent's all used. Draining and disconnected agents are never free capacity.
- Instances still starting count as capacity: ``PENDING``, or ``RUNNING`` without a joined
  agent, until ``max_agent_starting_period`` after ``launched_at``.
- ``TERMINATING`` instances still count against ``max_instances`` (they are still billed and
  the cloud may be slow) but not towards ``min_instances``.
- A decision's terminations are not yet done: launches are capped by ``max_instances`` minus
  every live instance, including those terminated in this very pass. Broken instances may take
  the pool below ``min_instances``; a later pass replaces them.
- One launch per pass, on the best usable offer. When the provider answers with a capacity
  error, the loop records a ``Backoff`` for that offer and asks again in the same pass: the next
  offer is then chosen.
- ``spot_max_price`` unset means the on-demand price of the same type (as on AWS); a backoff
  whose ``until`` is exactly ``now`` is over.
- A drained agent cannot be given work back (there is no undrain), so draining agents that are
  idle past the period are terminated even while demand is pending.
- An instance whose agent is ``interrupting`` (a spot notice) counts as gone: not capacity,
  not towards ``min_instances`` or ``max_instances``; the work still on it is in ``pending``
  (the master adds it), so its replacement is launched in the pass that first sees the notice.
  Once idle it is terminated (it cannot be given work).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from provisioner.config import ProviderConfig, SpotFallbackPolicy
from provisioner.types import (
    AgentInfo,
    Backoff,
    Decision,
    Demand,
    Drain,
    Instance,
    InstanceState,
    Launch,
    Market,
    Offer,
    OfferKey,
    PoolSnapshot,
    Termination,
)


def human_duration(value: timedelta) -> str:
    """``20m``, ``1h5m``, ``45s``, ``21m30s``: the way people write a period."""
    seconds = max(0, round(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def clock(at: datetime) -> str:
    """``12:04`` (UTC wall clock), with seconds only when they are not zero."""
    return at.strftime("%H:%M:%S" if at.second else "%H:%M")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class _Pool:
    """The snapshot's instances with their agents, sorted out once."""

    live: list[Instance]  # not TERMINATED
    active: list[Instance]  # neither TERMINATING nor TERMINATED
    agent_of: dict[str, AgentInfo]  # instance id → its agent
    # Instances whose agent is interrupting, with that agent: counted as gone already.
    reclaimed: list[tuple[Instance, AgentInfo]] = field(default_factory=list)

    @classmethod
    def of(cls, snapshot: PoolSnapshot) -> _Pool:
        live = [i for i in snapshot.instances if i.state is not InstanceState.TERMINATED]
        by_agent_id = {i.agent_id: i for i in live if i.agent_id}
        by_id = {i.id: i for i in live}
        agent_of: dict[str, AgentInfo] = {}
        for agent in snapshot.agents:
            instance = by_id.get(agent.instance_id or "") or by_agent_id.get(agent.agent_id)
            if instance is not None:
                agent_of[instance.id] = agent
        reclaimed = [(i, agent_of.pop(i.id)) for i in live if _interrupting(agent_of.get(i.id))]
        gone = {i.id for i, _ in reclaimed}
        live = [i for i in live if i.id not in gone]
        active = [i for i in live if i.state in (InstanceState.PENDING, InstanceState.RUNNING)]
        return cls(live, active, agent_of, reclaimed)


@dataclass
class _OfferChoice:
    offer: Offer | None
    note: str = ""  # why spot or on-demand was (not) chosen, for the status line
    spot_unavailable: bool = False


@dataclass
class _Packing:
    new_instances: int = 0
    uncovered: list[tuple[str, int]] = field(default_factory=list)  # (job, slots) needing more
    never_fit: list[Demand] = field(default_factory=list)


class ScaleDecider:
    """Decides launches, drains and terminations for one pool; every one carries a reason.

    ``gang_spare`` (default 0, off) launches that fraction more instances, rounded up, for a
    multi-agent job that needs two or more new ones. Such a job starts when its last instance
    joins, and boot times have a long tail (p95 ≈ 2.7 × median on EC2 GPU types), so a spare
    lets it start on the first ones to join; the spare then serves the next job or idles out.
    The simulator measures what it buys (``docs/benchmarks.md``).
    """

    def __init__(self, gang_spare: float = 0.0) -> None:
        if gang_spare < 0:
            raise ValueError(f"gang_spare must not be negative, got {gang_spare}")
        self.gang_spare = gang_spare

    def decide(self, snapshot: PoolSnapshot, config: ProviderConfig, now: datetime) -> Decision:
        work = _Pass(_Pool.of(snapshot), config, now)
        work.reclaimed()
        starting = work.broken()
        work.over_max()
        work.idle(snapshot.pending)
        starting = [i for i in starting if i.id not in work.gone]
        decision = work.decision

        choice = _choose_offer(snapshot, config, now)
        decision.spot_unavailable = choice.spot_unavailable
        shape = choice.offer.slots if choice.offer else _shape(snapshot, config)
        free = [
            agent.slots
            for instance_id, agent in work.pool.agent_of.items()
            if instance_id not in work.gone and _is_free(agent)
        ]
        free += [i.slots for i in starting]
        packing = _pack(snapshot.pending, free, shape, self.gang_spare)

        kept = len(work.pool.active) - len(work.gone)
        min_deficit = max(0, config.min_instances - kept)
        room = max(0, config.max_instances - len(work.pool.live))
        wanted = max(packing.new_instances, min_deficit)
        count = min(wanted, room) if choice.offer else 0
        status: list[str] = []
        if count and choice.offer is not None:
            reasons = []
            if packing.new_instances:
                reasons.append(_demand_reason(packing.uncovered, sum(free)))
            if min_deficit:
                reasons.append(f"min_instances {config.min_instances} ({kept} live)")
            decision.launches.append(Launch(choice.offer, count, "; ".join(reasons)))
            status.append(f"launching {count} × {choice.offer.key}")
        waiting = sum(slots for _, slots in packing.uncovered) - count * shape
        if room < wanted and waiting > 0:
            status.append(
                f"at max_instances {config.max_instances}: {_plural(waiting, 'slot')} wait"
            )
        if choice.offer is None and wanted:
            status.append(choice.note or "no offer to launch")
        elif count and choice.note:
            status.append(choice.note)
        for demand in packing.never_fit:
            status.append(
                f"job {demand.job_id} can never fit: {_plural(demand.slots, 'slot')} on one "
                f"agent, an instance has {shape}"
            )
        if decision.terminations:
            status.append(f"terminating {len(decision.terminations)}")
        if decision.drains:
            status.append(f"draining {_plural(len(decision.drains), 'idle agent')}")
        if not status:
            pending = sum(d.slots for d in snapshot.pending)
            status.append(
                _plural(len(work.pool.active), "instance")
                + (f", {len(starting)} starting" if starting else "")
                + (f", {_plural(pending, 'slot')} pending" if pending else ", nothing pending")
            )
        decision.status = "; ".join(status)
        return decision


@dataclass
class _Pass:
    """One pass's terminations and drains, so that each rule sees what the earlier ones did."""

    pool: _Pool
    config: ProviderConfig
    now: datetime
    decision: Decision = field(default_factory=Decision)
    gone: set[str] = field(default_factory=set)  # instances terminated in this pass

    def terminate(self, instance: Instance, reason: str) -> None:
        self.decision.terminations.append(Termination(instance.id, reason))
        self.gone.add(instance.id)

    def reclaimed(self) -> None:
        """Terminate instances being reclaimed by their cloud once their agent is idle (they
        already count as gone: not added to ``gone``, which adjusts the live counts)."""
        for instance, agent in self.pool.reclaimed:
            if agent.idle_since is not None and instance.state is not InstanceState.TERMINATING:
                reason = "idle after a spot interruption notice or rebalance recommendation"
                self.decision.terminations.append(Termination(instance.id, reason))

    def broken(self) -> list[Instance]:
        """Terminate never-joined and long-disconnected instances (even below the minimum);
        return the instances still starting, which count as capacity."""
        starting = []
        for instance in self.pool.active:
            agent = self.pool.agent_of.get(instance.id)
            if agent is None:
                if self.now - instance.launched_at >= self.config.max_agent_starting_period:
                    period = human_duration(self.config.max_agent_starting_period)
                    self.terminate(instance, f"agent never joined within {period}")
                else:
                    starting.append(instance)
            elif (
                agent.disconnected_since is not None
                and self.now - agent.disconnected_since >= self.config.max_disconnected_period
            ):
                away = human_duration(self.now - agent.disconnected_since)
                limit = human_duration(self.config.max_disconnected_period)
                self.terminate(
                    instance, f"disconnected for {away} (max_disconnected_period {limit})"
                )
        return starting

    def over_max(self) -> None:
        """Over ``max_instances``: never joined (newest first), disconnected, idle (longest idle
        first), then busy (newest first)."""
        remaining = [i for i in self.pool.active if i.id not in self.gone]
        excess = len(remaining) - self.config.max_instances
        if excess <= 0:
            return

        def rank(instance: Instance) -> tuple[int, float]:
            agent = self.pool.agent_of.get(instance.id)
            newest_first = -instance.launched_at.timestamp()
            if agent is None:
                return (0, newest_first)
            if agent.disconnected_since is not None:
                return (1, agent.disconnected_since.timestamp())
            if agent.idle_since is not None:
                return (2, agent.idle_since.timestamp())
            return (3, newest_first)

        for instance in sorted(remaining, key=rank)[:excess]:
            self.terminate(instance, f"over max_instances {self.config.max_instances}")

    def idle(self, pending: tuple[Demand, ...]) -> None:
        """Drain agents idle past the period; terminate them once drained and still idle. Never
        below ``min_instances``, and never drain an agent pending work could use."""
        period = self.config.max_idle_agent_period
        if period is None:
            return
        budget = len(self.pool.active) - len(self.gone) - self.config.min_instances
        candidates: list[tuple[datetime, AgentInfo, Instance]] = []
        for instance in self.pool.active:
            agent = self.pool.agent_of.get(instance.id)
            if instance.id in self.gone or agent is None or agent.disconnected_since is not None:
                continue
            if agent.idle_since is not None and self.now - agent.idle_since >= period:
                candidates.append((agent.idle_since, agent, instance))
        # Already-drained agents first (they are out of service either way), longest idle first.
        candidates.sort(key=lambda c: (not c[1].draining, c[0], c[2].id))
        for idle_since, agent, instance in candidates:
            if budget <= 0:
                return
            reason = (
                f"idle for {human_duration(self.now - idle_since)} "
                f"(max_idle_agent_period {human_duration(period)})"
            )
            if agent.draining:
                self.terminate(instance, reason)
            elif any(_could_serve(demand, agent) for demand in pending):
                continue
            else:
                self.decision.drains.append(Drain(agent.agent_id, reason))
            budget -= 1


def _choose_offer(snapshot: PoolSnapshot, config: ProviderConfig, now: datetime) -> _OfferChoice:
    """The cheapest usable offer the market policy allows, and why others were not used."""
    backoffs = {b.key: b for b in snapshot.backoffs if b.until > now}
    on_demand = _cheapest_first(o for o in snapshot.offers if o.market is Market.ON_DEMAND)
    usable_od = [o for o in on_demand if o.key not in backoffs]
    od_note = "" if usable_od else _unavailable("on-demand", on_demand, backoffs)
    policy = config.spot_fallback.policy
    if not config.spot or policy is SpotFallbackPolicy.ON_DEMAND:
        return _OfferChoice(usable_od[0] if usable_od else None, od_note)

    spot = _cheapest_first(o for o in snapshot.offers if o.market is Market.SPOT)
    od_price = {o.instance_type: o.price_per_hour for o in reversed(on_demand)}  # cheapest
    notes = []
    priced = []
    for offer in spot:
        cap = config.spot_max_price or od_price.get(offer.instance_type)
        if cap is not None and offer.price_per_hour > cap:
            notes.append(f"{offer.key} at ${offer.price_per_hour:.3f}/h is over ${cap:.3f}/h")
        else:
            priced.append(offer)
    usable = [o for o in priced if o.key not in backoffs]
    if usable:
        return _OfferChoice(usable[0])
    notes.insert(0, _unavailable("spot", priced, backoffs) if priced else "no spot offer")
    why = ", ".join(notes)
    if policy is SpotFallbackPolicy.SPOT_ONLY:
        return _OfferChoice(None, f"{why} (spot_only)", spot_unavailable=True)
    since = snapshot.spot_unavailable_since
    fallback_at = (since or now) + config.spot_fallback.delay
    if since is None or now < fallback_at:
        note = f"{why}, trying on-demand at {clock(fallback_at)}"
        return _OfferChoice(None, note, spot_unavailable=True)
    if not usable_od:
        return _OfferChoice(None, f"{why}; {od_note}", spot_unavailable=True)
    return _OfferChoice(usable_od[0], f"{why}, trying on-demand", spot_unavailable=True)


def _cheapest_first(offers: Iterable[Offer]) -> list[Offer]:
    return sorted(offers, key=lambda o: (o.price_per_hour, o.zone or "", o.instance_type))


def _unavailable(market: str, offers: list[Offer], backoffs: dict[OfferKey, Backoff]) -> str:
    if not offers:
        return f"no {market} offer"
    where = ", ".join(
        f"{'in ' + o.zone if o.zone else 'for ' + o.instance_type} "
        f"until {clock(backoffs[o.key].until)}"
        for o in offers
        if o.key in backoffs
    )
    return f"{market} capacity unavailable {where}"


def _shape(snapshot: PoolSnapshot, config: ProviderConfig) -> int:
    """Slots of one instance when no offer is chosen (for the status line only)."""
    if snapshot.offers:
        return max(o.slots for o in snapshot.offers)
    return config.instance_slots or 1


def _interrupting(agent: AgentInfo | None) -> bool:
    return agent is not None and agent.interrupting


def _is_free(agent: AgentInfo) -> bool:
    return agent.idle_since is not None and not agent.draining and agent.disconnected_since is None


def _could_serve(demand: Demand, agent: AgentInfo) -> bool:
    return not demand.single_agent or demand.slots <= agent.slots


def _pack(
    pending: tuple[Demand, ...], free: list[int], shape: int, gang_spare: float = 0.0
) -> _Packing:
    """First-fit decreasing of the pending demand onto free slots, then onto new instances."""
    packing = _Packing()
    bins = sorted(free, reverse=True)  # free slots per existing or starting instance
    fresh: list[int] = []  # free slots left on instances this pass launches
    for demand in sorted(pending, key=lambda d: -d.slots):
        if demand.single_agent and demand.slots > shape:
            packing.never_fit.append(demand)
            continue
        if demand.single_agent:
            for slots in (bins, fresh):
                index = next((i for i, s in enumerate(slots) if s >= demand.slots), None)
                if index is not None:
                    slots[index] -= demand.slots
                    break
            else:
                fresh.append(shape - demand.slots)
                packing.new_instances += 1
                packing.uncovered.append((demand.job_id, demand.slots))
            continue
        need = demand.slots
        for slots in (bins, fresh):
            for i, available in enumerate(slots):
                take = min(available, need)
                slots[i] -= take
                need -= take
        if need:
            count = math.ceil(need / shape)
            spares = math.ceil(count * gang_spare) if count >= 2 else 0
            packing.new_instances += count + spares
            fresh += [count * shape - need] + [shape] * spares
            packing.uncovered.append((demand.job_id, need))
    return packing


def _demand_reason(uncovered: list[tuple[str, int]], free: int) -> str:
    slots = sum(s for _, s in uncovered)
    jobs = [job for job, _ in uncovered]
    if len(jobs) == 1:
        who = f"job {jobs[0]}"
    else:
        shown = ", ".join(jobs[:3])
        who = f"jobs {shown}" + (f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
    capacity = f"{_plural(free, 'slot')} idle or starting" if free else "no idle capacity"
    return f"{_plural(slots, 'slot')} pending for {who}; {capacity}"
