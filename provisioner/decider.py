"""The scale decider: what a pool should launch, drain and terminate, and why.

``ScaleDecider.decide(snapshot, config, now)`` is pure: no I/O, no clock reads, no randomness.
The same snapshot at the same ``now`` always gives the same decision, which is what makes it
table-testable and lets ``bench/`` drive it through a simulated week.

What it assumes about the snapshot:

- With one instance type every offer has the same shape and demand is packed onto the
  ``slots`` of the offer chosen to launch; with several (``instance_types``) each job is
  fitted to the cheapest type that holds it (``provisioner/offers.py``), one launch per type.
- ``max_idle_agent_period: auto`` reads ``snapshot.history`` (``provisioner/idle_policy.py``);
  so does the warm pool (``provisioner/forecast.py``). ``boot_hedge`` above 0 makes instances
  still starting racers rather than capacity: the surplus is cancelled as agents join.
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
- One launch per pass (per type in a mixed pool), on the best usable offer. When the provider
  answers with a capacity error, the loop records a ``Backoff`` for that offer and asks again
  in the same pass: the next offer is then chosen.
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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from provisioner.config import AUTO, ProviderConfig
from provisioner.forecast import Forecast, forecast
from provisioner.idle_policy import BreakEven
from provisioner.markets import choose_offer, human_duration, plural
from provisioner.offers import demand_reason, fit_mixed, pack, within_budget
from provisioner.types import (
    AgentInfo,
    Decision,
    Demand,
    Drain,
    Instance,
    InstanceState,
    Launch,
    Market,
    PoolSnapshot,
    Termination,
)


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
        if config.max_warm_cost_per_hour > 0:
            work.warm = forecast(snapshot.history, now, work.break_even(snapshot).boot_s)
        work.idle(snapshot)
        starting = [i for i in starting if i.id not in work.gone]
        decision = work.decision
        if len({o.instance_type for o in snapshot.offers}) > 1:
            self._decide_mixed(work, snapshot, starting)
            return decision

        choice = choose_offer(snapshot, config, now)
        decision.spot_unavailable = choice.spot_unavailable
        shape = choice.offer.slots if choice.offer else _shape(snapshot, config)
        free = [
            agent.slots
            for instance_id, agent in work.pool.agent_of.items()
            if instance_id not in work.gone and _is_free(agent)
        ]
        hedge = config.boot_hedge
        race = ""
        if hedge > 0:
            # Race boots: pack onto idle agents only, then keep (1 + hedge) × the instances the
            # rest needs starting; the first to join take the work, the surplus is cancelled.
            packing = pack(snapshot.pending, free, shape, self.gang_spare)
            target = math.ceil(packing.new_instances * (1 + hedge))
            # Instances starting for the warm pool are not racers to cancel.
            reserve = 0
            if work.warm is not None and work.warm.slots:
                reserve = max(0, math.ceil(work.warm.slots / shape) - work.kept_warm)
            race = work.race(starting, target + reserve, packing.new_instances, hedge)
            starting = [i for i in starting if i.id not in work.gone]
            packing.new_instances = max(0, target - len(starting))
            free += [i.slots for i in starting]
        else:
            free += [i.slots for i in starting]
            packing = pack(snapshot.pending, free, shape, self.gang_spare)

        kept = len(work.pool.active) - len(work.gone)
        min_deficit = max(0, config.min_instances - kept)
        room = max(0, config.max_instances - len(work.pool.live))
        wanted = max(packing.new_instances, min_deficit)
        count = min(wanted, room) if choice.offer else 0
        status: list[str] = []
        if count and choice.offer is not None:
            reasons = []
            if packing.new_instances:
                reasons.append(demand_reason(packing.uncovered, sum(free)))
                if race:
                    reasons.append(race)
            if min_deficit:
                reasons.append(f"min_instances {config.min_instances} ({kept} live)")
            launch = Launch(choice.offer, count, "; ".join(reasons))
            kept_launches, budget_note = within_budget(
                [launch], work.running(), config.max_cost_per_hour
            )
            decision.launches += kept_launches
            count = sum(k.count for k in kept_launches)
            if count:
                status.append(f"launching {count} × {choice.offer.key}")
            if budget_note:
                status.append(budget_note)
        if work.warm is not None and work.warm.slots and choice.offer is not None:
            pending_slots = sum(d.slots for d in snapshot.pending)
            spare = sum(free) + count * shape - pending_slots
            price = choice.offer.price_per_hour
            idle_spend = sum(i.price_per_hour for i in work.idle_instances())
            affordable = math.floor((config.max_warm_cost_per_hour - idle_spend) / price + 1e-9)
            more = min(math.ceil(max(0, work.warm.slots - spare) / shape), affordable, room - count)
            if more > 0:
                warm = Launch(choice.offer, more, work.warm.reason())
                # Earlier launches fit the budget already: only the warm one may be cut.
                planned = [*decision.launches, warm]
                kept_all, _ = within_budget(planned, work.running(), config.max_cost_per_hour)
                kept_warm = kept_all[len(decision.launches) :]
                decision.launches += kept_warm
                if kept_warm:
                    status.append(f"{work.warm.reason()}: launching {kept_warm[0].count}")
            elif work.kept_warm:
                status.append(f"{work.warm.reason()}: {plural(work.kept_warm, 'idle agent')} kept")
        waiting = sum(slots for _, slots in packing.uncovered) - count * shape
        if room < wanted and waiting > 0:
            status.append(
                f"at max_instances {config.max_instances}: {plural(waiting, 'slot')} wait"
            )
        if choice.offer is None and wanted:
            status.append(choice.note or "no offer to launch")
        elif count and choice.note:
            status.append(choice.note)
        for demand in packing.never_fit:
            status.append(
                f"job {demand.job_id} can never fit: {plural(demand.slots, 'slot')} on one "
                f"agent, an instance has {shape}"
            )
        status += work.partial_gangs(snapshot.pending)
        if decision.terminations:
            status.append(f"terminating {len(decision.terminations)}")
        if decision.drains:
            status.append(f"draining {plural(len(decision.drains), 'idle agent')}")
        if not status:
            pending = sum(d.slots for d in snapshot.pending)
            status.append(
                plural(len(work.pool.active), "instance")
                + (f", {len(starting)} starting" if starting else "")
                + (f", {plural(pending, 'slot')} pending" if pending else ", nothing pending")
            )
        decision.status = "; ".join(status)
        return decision

    def _decide_mixed(self, work: _Pass, snapshot: PoolSnapshot, starting: list[Instance]) -> None:
        """Several instance types: fit each job to the cheapest type that holds it
        (``provisioner/offers.py``), race boots per type, keep within the budget."""
        config, decision = work.config, work.decision
        choices, notes = [], []
        for instance_type in sorted({o.instance_type for o in snapshot.offers}):
            mine = tuple(o for o in snapshot.offers if o.instance_type == instance_type)
            choice = choose_offer(replace(snapshot, offers=mine), config, work.now)
            decision.spot_unavailable = decision.spot_unavailable or choice.spot_unavailable
            if choice.offer is not None:
                choices.append(choice)
            elif choice.note:
                notes.append(f"{instance_type}: {choice.note}")
        # Spot counts as unavailable only when no type has a usable spot offer.
        decision.spot_unavailable = decision.spot_unavailable and not any(
            c.offer is not None and c.offer.market is Market.SPOT for c in choices
        )
        offers = [c.offer for c in choices if c.offer is not None]
        free = [
            agent.slots
            for instance_id, agent in work.pool.agent_of.items()
            if instance_id not in work.gone and _is_free(agent)
        ]
        hedge = config.boot_hedge
        if hedge == 0:
            free += [i.slots for i in starting]
        packing = fit_mixed(snapshot.pending, free, offers, self.gang_spare)
        room = max(0, config.max_instances - len(work.pool.live))
        launches: list[Launch] = []
        for fit in packing.fits.values():
            count, reasons = fit.count, [demand_reason(fit.uncovered, sum(free))]
            if hedge > 0:
                theirs = [i for i in starting if i.instance_type == fit.offer.instance_type]
                target = math.ceil(fit.count * (1 + hedge))
                reasons.append(work.race(theirs, target, fit.count, hedge))
                count = max(0, target - len([i for i in theirs if i.id not in work.gone]))
            reasons += sorted(fit.why)
            if min(count, room):
                launches.append(Launch(fit.offer, min(count, room), "; ".join(reasons)))
                room -= min(count, room)
        if hedge > 0:  # types no work was fitted to race nothing
            fitted = set(packing.fits)
            idle_types = [i for i in starting if i.instance_type not in fitted]
            for instance_type in sorted({i.instance_type for i in idle_types}):
                work.race([i for i in idle_types if i.instance_type == instance_type], 0, 0, hedge)
        kept = len(work.pool.active) - len(work.gone)
        deficit = min(max(0, config.min_instances - kept), room)
        if deficit and offers:
            cheapest = min(offers, key=lambda o: (o.price_per_hour, o.slots))
            reason = f"min_instances {config.min_instances} ({kept} live)"
            launches.append(Launch(cheapest, deficit, reason))
        launches, budget_note = within_budget(launches, work.running(), config.max_cost_per_hour)
        decision.launches = launches
        status = [f"launching {launch.count} × {launch.offer.key}" for launch in launches]
        if budget_note:
            status.append(budget_note)
        if not offers and (packing.fits or snapshot.pending):
            status += notes or ["no offer to launch"]
        for demand in packing.never_fit:
            largest = max((o.slots for o in snapshot.offers), default=0)
            status.append(
                f"job {demand.job_id} can never fit: {plural(demand.slots, 'slot')} on one "
                f"agent, the largest instance type has {largest}"
            )
        status += work.partial_gangs(snapshot.pending)
        if decision.terminations:
            status.append(f"terminating {len(decision.terminations)}")
        if decision.drains:
            status.append(f"draining {plural(len(decision.drains), 'idle agent')}")
        pending = sum(d.slots for d in snapshot.pending)
        decision.status = "; ".join(status) or (
            plural(len(work.pool.active), "instance")
            + (f", {plural(pending, 'slot')} pending" if pending else ", nothing pending")
        )


@dataclass
class _Pass:
    """One pass's terminations and drains, so that each rule sees what the earlier ones did."""

    pool: _Pool
    config: ProviderConfig
    now: datetime
    decision: Decision = field(default_factory=Decision)
    gone: set[str] = field(default_factory=set)  # instances terminated in this pass
    warm: Forecast | None = None  # with max_warm_cost_per_hour: the slots to keep warm
    kept_warm: int = 0  # idle agents kept for the forecast
    _break_even: BreakEven | None = None

    def break_even(self, snapshot: PoolSnapshot) -> BreakEven:
        """The pass's break-even rule (built once: it samples the history)."""
        if self._break_even is None:
            self._break_even = BreakEven(snapshot.history, self.now)
        return self._break_even

    def idle_instances(self) -> list[Instance]:
        """Instances whose agent is idle and in service (the warm pool's spend)."""
        return [
            i
            for i in self.pool.active
            if i.id not in self.gone
            and (agent := self.pool.agent_of.get(i.id)) is not None
            and _is_free(agent)
        ]

    def _warm_agents(self) -> dict[str, str]:
        """Idle agents kept for the forecast (newest idle first, within the hourly cap)."""
        if self.warm is None or not self.warm.slots:
            return {}
        free = [
            (agent, instance)
            for instance in self.idle_instances()
            if (agent := self.pool.agent_of[instance.id]) is not None
        ]
        free.sort(key=lambda p: (p[0].idle_since or self.now, p[0].agent_id), reverse=True)
        kept: dict[str, str] = {}
        slots, spend = 0, 0.0
        for agent, instance in free:
            if slots >= self.warm.slots:
                break
            if spend + instance.price_per_hour > self.config.max_warm_cost_per_hour + 1e-9:
                break
            kept[agent.agent_id] = self.warm.reason()
            slots += agent.slots
            spend += instance.price_per_hour
        return kept

    def partial_gangs(self, pending: tuple[Demand, ...]) -> list[str]:
        """Multi-agent jobs that idle agents are held for while the rest of their instances
        boot: the idle they cost, for the status line."""
        idle = sum(a.slots for a in (self.pool.agent_of[i.id] for i in self.idle_instances()))
        notes = []
        for demand in pending:
            if not demand.single_agent and 0 < idle < demand.slots:
                notes.append(
                    f"job {demand.job_id} waits for {plural(demand.slots, 'slot')}: "
                    f"{plural(idle, 'idle slot')} held meanwhile"
                )
        return notes

    def running(self) -> list[Instance]:
        """Instances still billed after this pass (for the budget cap)."""
        return [i for i in self.pool.live if i.id not in self.gone]

    def terminate(self, instance: Instance, reason: str) -> None:
        self.decision.terminations.append(Termination(instance.id, reason))
        self.gone.add(instance.id)

    def race(self, starting: list[Instance], target: int, needed: int, hedge: float) -> str:
        """``boot_hedge``: cancel starting instances beyond ``target`` (newest first, never
        below ``min_instances``); return the launch reason's race note."""
        racing = math.ceil(needed * (1 + hedge))
        note = f"racing {racing} boots for {plural(needed, 'instance')} (boot_hedge {hedge:g})"
        surplus = len(starting) - target
        budget = len(self.pool.active) - len(self.gone) - self.config.min_instances
        doomed = sorted(starting, key=lambda i: (i.launched_at, i.id), reverse=True)
        for instance in doomed[: max(0, min(surplus, budget))]:
            self.terminate(
                instance,
                f"boot race: {plural(len(starting), 'instance')} starting where "
                f"{target} are needed (boot_hedge {hedge:g})",
            )
        return note

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

    def idle(self, snapshot: PoolSnapshot) -> None:
        """Drain agents idle past the period; terminate them once drained and still idle. Never
        below ``min_instances``, and never drain an agent pending work could use."""
        period = self.config.max_idle_agent_period
        if period is None:
            return
        keep = self._auto_periods(snapshot) if period == AUTO else {}
        warm = self._warm_agents()
        budget = len(self.pool.active) - len(self.gone) - self.config.min_instances
        candidates: list[tuple[datetime, AgentInfo, Instance, str]] = []
        for instance in self.pool.active:
            agent = self.pool.agent_of.get(instance.id)
            if instance.id in self.gone or agent is None or agent.disconnected_since is not None:
                continue
            if agent.idle_since is None:
                continue
            if agent.agent_id in warm and not agent.draining:
                self.kept_warm += 1
                continue
            if isinstance(period, timedelta):
                if self.now - agent.idle_since >= period:
                    why = f"max_idle_agent_period {human_duration(period)}"
                    candidates.append((agent.idle_since, agent, instance, why))
            elif agent.draining:
                candidates.append((agent.idle_since, agent, instance, "drained"))
            elif agent.agent_id in keep and self.now - agent.idle_since >= keep[agent.agent_id][0]:
                candidates.append((agent.idle_since, agent, instance, keep[agent.agent_id][1]))
        # Already-drained agents first (they are out of service either way), longest idle first.
        candidates.sort(key=lambda c: (not c[1].draining, c[0], c[2].id))
        for idle_since, agent, instance, why in candidates:
            if budget <= 0:
                return
            reason = f"idle for {human_duration(self.now - idle_since)} ({why})"
            if agent.draining:
                self.terminate(instance, reason)
            elif any(_could_serve(demand, agent) for demand in snapshot.pending):
                continue
            else:
                self.decision.drains.append(Drain(agent.agent_id, reason))
            budget -= 1

    def _auto_periods(self, snapshot: PoolSnapshot) -> dict[str, tuple[timedelta, str]]:
        """``auto``: each idle agent's break-even keep period, newest idle ranked first."""
        rule = self.break_even(snapshot)
        free = [
            agent
            for instance in self.pool.active
            if instance.id not in self.gone
            and (agent := self.pool.agent_of.get(instance.id)) is not None
            and _is_free(agent)
        ]
        free.sort(key=lambda a: (a.idle_since or self.now, a.agent_id), reverse=True)
        periods: dict[str, tuple[timedelta, str]] = {}
        depth = 0
        basis = "learned from the last 2h" if rule.learned else "2 × boot, no history yet"
        boot = human_duration(timedelta(seconds=rule.boot_s))
        for agent in free:
            depth += agent.slots
            period = rule.keep(depth)
            periods[agent.agent_id] = (
                period,
                f"max_idle_agent_period auto: {human_duration(period)} with "
                f"{plural(depth, 'slot')} idle, boot ~{boot}, {basis}",
            )
        return periods


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
