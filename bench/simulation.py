"""A discrete-event simulation of one resource pool: the job trace, a simple scheduler, the
provisioning loop around a real decision policy, and a simulated cloud.

The loop mirrors ``provisioner/loop.py``: a pass every ``tick_s`` and on every submission;
drains, then terminations, then launches; a capacity error backs that offer off (doubling from
``capacity_backoff.initial`` up to ``.max``, cleared by a success) and the policy is asked again
in the same pass. ``spot_unavailable_since`` is kept from ``Decision.spot_unavailable``. Passes
are skipped while the pool has no instance and no work (with ``min_instances`` 0 the decision
is then empty); that is the only shortcut. A pool that never shrinks to nothing (idle period
``off``, or ``min_instances`` above 0) is billed until ``TAIL_S`` after the last job ends.

The scheduler places queued jobs by priority (lower first), then submission, with backfill, on
connected, non-draining agents: a single-agent job on one agent with enough free slots, a
multi-agent job on free slots anywhere. A single-agent job larger than an instance is rejected at
submission (the master's scheduler rejects what can never fit) and left out of every figure.
A spot notice stops the jobs on that instance at once; they go back to the queue having lost
their progress since the last checkpoint (one every ``CHECKPOINT_S`` of progress). With
``notice_checkpoint_s`` set (the master's notice handling, docs/spot.md) a job instead saves a
checkpoint at notice time when that many seconds fit in the notice (``spot_notice_s``): it loses
only the checkpoint's own slot time; otherwise it loses its progress as without the handling.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bench.cloud import CapacityError, SimAgent, SimCloud, SimInstance, agent_info
from bench.workload import CloudProfile, Job, lower_bound, percentile
from provisioner.config import ProviderConfig
from provisioner.history import HistoryRecorder
from provisioner.idle_policy import HORIZON
from provisioner.types import (
    Backoff,
    Decision,
    Demand,
    InstanceState,
    Offer,
    OfferKey,
    PoolSnapshot,
)

EPOCH = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; the trace's second 0
CHECKPOINT_S = 600.0  # a checkpoint every 10 minutes of progress
RETRIES_PER_PASS = 8  # as provisioner/loop.py: decide again after a capacity error
GIVE_UP_AFTER_S = 30 * 86400.0  # past the last submission: report what never finished
TAIL_S = 3600.0  # with every job done, instances still up this long after the idle period end


class Policy(Protocol):
    def decide(self, snapshot: PoolSnapshot, config: ProviderConfig, now: datetime) -> Decision: ...


@dataclass(eq=False)
class JobRun:
    job: Job
    checkpointed_s: float = 0.0  # progress that survives an interruption
    started_s: float | None = None  # current run
    first_start_s: float | None = None
    finished_s: float | None = None
    run: int = 0  # bumped on every start, so a stale finish event is ignored
    agents: tuple[SimAgent, ...] = ()


@dataclass(frozen=True)
class Result:
    cost: float
    on_demand_cost: float
    lower_bound: float
    idle_fraction: float
    wait_p50_s: float
    wait_p95_s: float
    launches: int
    launch_errors: int
    interruptions: int
    slot_hours_lost: float
    rejected: int
    unfinished: int
    peak_instances: int

    @property
    def cost_ratio(self) -> float:
        return self.cost / self.lower_bound if self.lower_bound else math.inf


class Simulation:
    def __init__(
        self,
        jobs: list[Job],
        profile: CloudProfile,
        config: ProviderConfig,
        offers: list[Offer],
        policy: Policy,
        seed: int = 0,
        tick_s: float = 5.0,
        spot_outages: tuple[tuple[float, float], ...] = (),
        notice_checkpoint_s: float | None = None,
    ) -> None:
        self.profile, self.config, self.offers, self.policy = profile, config, offers, policy
        self.notice_checkpoint_s = notice_checkpoint_s
        self.tick_s = tick_s
        self.cloud = SimCloud(profile, seed, spot_outages)
        shape = max(o.slots for o in offers)
        self.rejected = [j for j in jobs if j.single_agent and j.slots > shape]
        self.jobs = [JobRun(j) for j in jobs if not (j.single_agent and j.slots > shape)]
        self.by_id = {r.job.id: r for r in self.jobs}
        self.retries = getattr(policy, "retries_after_capacity_error", RETRIES_PER_PASS)
        self.now_s = 0.0
        self.events: list[tuple[float, int, str, object]] = []
        self.seq = itertools.count()
        self.queue: list[tuple[int, float, int, JobRun]] = []  # (priority, queued, seq, run)
        self.instances: dict[str, SimInstance] = {}  # not yet terminated
        self.backoffs: dict[OfferKey, Backoff] = {}
        self.spot_unavailable_since: datetime | None = None
        self.ticking = False
        self.busy_slot_s = 0.0
        self.lost_slot_s = 0.0
        self.peak = 0
        self.finished = 0
        self.last_finish_s = 0.0
        self.history = HistoryRecorder(EPOCH)

    # ---- events ------------------------------------------------------------------------------

    def at(self, time_s: float, kind: str, subject: object = None) -> None:
        heapq.heappush(self.events, (time_s, next(self.seq), kind, subject))

    def run(self) -> Result:
        for run in self.jobs:
            self.at(run.job.submit_s, "submit", run)
        last = max((r.job.submit_s for r in self.jobs), default=0.0)
        idle = self.config.max_idle_agent_period
        if isinstance(idle, str):  # auto: never keeps an idle agent past the horizon
            idle = HORIZON
        tail = TAIL_S + (idle.total_seconds() if idle is not None else 0.0)
        while self.events:
            time_s, _, kind, subject = heapq.heappop(self.events)
            if time_s > last + GIVE_UP_AFTER_S:
                break
            if self.finished == len(self.jobs) and time_s > self.last_finish_s + tail:
                break  # reached with max_idle_agent_period off, or min_instances above 0
            self.now_s = time_s
            getattr(self, f"_on_{kind}")(subject)
        for instance in list(self.instances.values()):
            self._end(instance)
        return self._result()

    def _on_submit(self, run: JobRun) -> None:
        self.history.arrived(EPOCH + timedelta(seconds=self.now_s), run.job.slots)
        self._enqueue(run)
        self._schedule()
        self._pass()
        if not self.ticking:
            self.ticking = True
            self.at(self.now_s + self.tick_s, "tick")

    def _on_tick(self, _: object) -> None:
        if not self.instances and not self.queue and self.config.min_instances == 0:
            self.ticking = False
            return
        self._pass()
        self.at(self.now_s + self.tick_s, "tick")

    def _on_boot(self, instance: SimInstance) -> None:
        if instance.state is not InstanceState.PENDING:
            return
        instance.state = InstanceState.RUNNING
        instance.agent = SimAgent(instance.id, instance.offer.slots, self.now_s)
        self.history.booted(self.now_s - instance.launched_s)
        self._schedule()

    def _on_finish(self, token: tuple[JobRun, int]) -> None:
        run, number = token
        if run.run != number or run.started_s is None:
            return
        self._stop(run)
        run.finished_s = self.now_s
        self.finished += 1
        self.last_finish_s = self.now_s
        self._schedule()

    def _on_notice(self, instance: SimInstance) -> None:
        if instance.state is InstanceState.TERMINATED:
            return
        self.cloud.bill.interruptions += 1
        self._evict(instance, notice=True)
        instance.state = InstanceState.TERMINATING
        self.at(self.now_s + self.profile.spot_notice_s, "reclaim", instance)
        self._schedule()

    def _on_reclaim(self, instance: SimInstance) -> None:
        if instance.state is not InstanceState.TERMINATED:
            self._end(instance)

    # ---- the scheduler -----------------------------------------------------------------------

    def _enqueue(self, run: JobRun) -> None:
        bisect.insort(self.queue, (run.job.priority, self.now_s, next(self.seq), run))

    def _schedule(self) -> None:
        agents = [
            i.agent
            for i in self.instances.values()
            if i.state is InstanceState.RUNNING
            and i.agent is not None
            and not i.agent.draining
            and i.agent.free_slots > 0
        ]
        if not agents or not self.queue:
            return
        placed = []
        for entry in self.queue:
            job = entry[3].job
            if job.single_agent:
                fits = [a for a in agents if a.free_slots >= job.slots]
                if not fits:
                    continue
                best = min(fits, key=lambda a: (a.free_slots, a.id))
                self._start(entry[3], {best: job.slots})
            else:
                if sum(a.free_slots for a in agents) < job.slots:
                    continue
                need, share = job.slots, {}
                for agent in sorted(agents, key=lambda a: (-a.free_slots, a.id)):
                    take = min(agent.free_slots, need)
                    if take:
                        share[agent] = take
                        need -= take
                self._start(entry[3], share)
            placed.append(entry)
            agents = [a for a in agents if a.free_slots > 0]
        for entry in placed:
            self.queue.remove(entry)

    def _start(self, run: JobRun, share: dict[SimAgent, int]) -> None:
        for agent, slots in share.items():
            agent.running[run.job.id] = slots
            agent.idle_since_s = None
        run.agents = tuple(share)
        run.started_s = self.now_s
        if run.first_start_s is None:
            run.first_start_s = self.now_s
        run.run += 1
        self.at(self.now_s + run.job.duration_s - run.checkpointed_s, "finish", (run, run.run))

    def _stop(self, run: JobRun) -> float:
        """Take the job off its agents; return the progress of this run."""
        assert run.started_s is not None
        progress = self.now_s - run.started_s
        self.busy_slot_s += progress * run.job.slots
        for agent in run.agents:
            agent.running.pop(run.job.id, None)
            if not agent.running:
                agent.idle_since_s = self.now_s
        run.agents, run.started_s = (), None
        return progress

    def _evict(self, instance: SimInstance, notice: bool = False) -> None:
        """Stop the jobs on an instance that is going away and queue them again; on a spot
        notice with ``notice_checkpoint_s`` that fits, they checkpoint first."""
        agent, instance.agent = instance.agent, None
        if agent is None:
            return
        saving = self.notice_checkpoint_s
        saved = notice and saving is not None and saving <= self.profile.spot_notice_s
        for run in [self.by_id[job_id] for job_id in agent.running]:
            progress = run.checkpointed_s + self._stop(run)
            if saved:
                assert saving is not None
                self.lost_slot_s += saving * run.job.slots
                run.checkpointed_s = progress
                self._enqueue(run)
                continue
            kept = math.floor(progress / CHECKPOINT_S) * CHECKPOINT_S
            self.lost_slot_s += (progress - kept) * run.job.slots
            run.checkpointed_s = kept
            self._enqueue(run)

    # ---- the provisioning loop ---------------------------------------------------------------

    def _pass(self) -> None:
        decision = self._decide()
        for drain in decision.drains:
            for instance in self.instances.values():
                if instance.agent is not None and instance.agent.id == drain.agent_id:
                    instance.agent.draining = True
        for termination in decision.terminations:
            doomed = self.instances.get(termination.instance_id)
            if doomed is not None:
                self._end(doomed)
        for _ in range(self.retries + 1):
            if not decision.launches or not self._launch(decision):
                break
            decision = self._decide()
        self._schedule()

    def _decide(self) -> Decision:
        now = EPOCH + timedelta(seconds=self.now_s)
        instances = tuple(i.seen(EPOCH) for i in self.instances.values())
        agents = tuple(agent_info(i.agent, i.id, EPOCH) for i in self.instances.values() if i.agent)
        pending = tuple(Demand(r.job.id, r.job.slots, r.job.single_agent) for *_, r in self.queue)
        snapshot = PoolSnapshot(
            "sim",
            pending,
            instances,
            agents,
            tuple(self.offers),
            tuple(self.backoffs.values()),
            self.spot_unavailable_since,
            self.history.history(now),
        )
        decision = self.policy.decide(snapshot, self.config, now)
        if not decision.spot_unavailable:
            self.spot_unavailable_since = None
        elif self.spot_unavailable_since is None:
            self.spot_unavailable_since = now
        return decision

    def _launch(self, decision: Decision) -> bool:
        """Execute the launches; True when a capacity error means asking again."""
        for launch in decision.launches:
            try:
                created = self.cloud.launch(launch.offer, launch.count, self.now_s)
            except CapacityError as exc:
                previous = self.backoffs.get(launch.offer.key)
                failures = (previous.failures if previous else 0) + 1
                backoff = self.config.capacity_backoff
                # Capping the exponent keeps a long outage from overflowing timedelta.
                delay = min(backoff.initial * 2 ** min(failures - 1, 30), backoff.max)
                until = EPOCH + timedelta(seconds=self.now_s) + delay
                self.backoffs[launch.offer.key] = Backoff(
                    launch.offer.key, until, failures, str(exc)
                )
                return True
            self.backoffs.pop(launch.offer.key, None)
            for instance in created:
                self.instances[instance.id] = instance
                self.at(instance.boot_s, "boot", instance)
                if instance.interrupt_s < math.inf:
                    self.at(instance.interrupt_s, "notice", instance)
            self.peak = max(self.peak, len(self.instances))
        return False

    def _end(self, instance: SimInstance) -> None:
        self._evict(instance)
        self.cloud.end(instance, self.now_s)
        self.instances.pop(instance.id, None)

    # ---- results -----------------------------------------------------------------------------

    def _result(self) -> Result:
        cheapest = min(o.price_per_hour / o.slots for o in self.offers) / 3600
        waits = sorted(
            r.first_start_s - r.job.submit_s for r in self.jobs if r.first_start_s is not None
        )
        bill = self.cloud.bill
        return Result(
            cost=bill.cost,
            on_demand_cost=bill.on_demand_cost,
            lower_bound=lower_bound((r.job for r in self.jobs), cheapest),
            idle_fraction=1 - self.busy_slot_s / bill.paid_slot_s if bill.paid_slot_s else 0.0,
            wait_p50_s=percentile(waits, 50),
            wait_p95_s=percentile(waits, 95),
            launches=bill.launches,
            launch_errors=bill.launch_errors,
            interruptions=bill.interruptions,
            slot_hours_lost=self.lost_slot_s / 3600,
            rejected=len(self.rejected),
            unfinished=sum(1 for r in self.jobs if r.finished_s is None),
            peak_instances=self.peak,
        )
