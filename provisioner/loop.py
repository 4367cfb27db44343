"""The provisioning loop of one pool: snapshot, decide, act, record — and explain.

A pass lists the provider's instances (one call), asks the world (the master) for pending
demand and agents, asks the pure ``ScaleDecider`` what to do, and executes: drains, then
terminations, then launches. Launch failures are classified: a capacity error backs off that
offer (doubling from ``capacity_backoff.initial`` up to ``.max``) and the decider is asked again
in the same pass so the next offer is tried at once; quota backs off every offer of the market;
throttling and transient errors wait for the next pass; a config error marks the pool degraded
with the cloud's message until a launch succeeds. Every launch, termination, drain and failure
is recorded as an instance event with its reason.

Two things arrive with the list rather than from a call: launches a cloud refused after
accepting them (GCP's zone operations, from providers that are ``FollowsLaunches``) are backed
off like a failed launch call, and instances the cloud took back (``Instance.interruption``,
e.g. a preempted Spot VM) have their agents' work re-queued without spending a restart and are
terminated at once.

Passes run when woken (demand changed: the target is a launch call within a second of work
being queued) and on a periodic tick. Provider calls run on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from provisioner.base import FollowsLaunches, Provider
from provisioner.config import ProviderConfig
from provisioner.decider import ScaleDecider
from provisioner.history import HistoryRecorder
from provisioner.types import (
    AgentInfo,
    Backoff,
    Decision,
    Demand,
    ErrorClass,
    Instance,
    LaunchedInstance,
    Offer,
    OfferKey,
    PoolSnapshot,
    ProviderError,
)

log = logging.getLogger(__name__)
DEFAULT_TICK = timedelta(seconds=10)
OFFERS_TTL = timedelta(minutes=5)
MAX_RETRIES_PER_PASS = 8  # decide again after a capacity error, at most this often per pass
TRANSIENT_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF_DOUBLINGS = 20


@dataclass
class PoolStatus:
    """What the console and ``det resource-pool list`` show for a provisioned pool."""

    summary: str = "starting"
    degraded: str | None = None
    instances: list[Instance] = field(default_factory=list)
    backoffs: list[Backoff] = field(default_factory=list)
    pending_slots: int = 0
    last_pass: datetime | None = None


class PoolWorld(Protocol):
    """What the loop needs from the master."""

    async def demand(self, pool: str) -> list[Demand]: ...

    async def agents(self, pool: str) -> list[AgentInfo]: ...

    async def drain(self, agent_id: str, reason: str) -> None: ...

    async def launched(
        self, pool: str, provider: str, instance: LaunchedInstance, reason: str
    ) -> None: ...

    async def terminated(self, pool: str, instance_id: str, reason: str) -> None: ...

    async def event(self, pool: str, instance_id: str | None, kind: str, reason: str) -> None: ...

    async def observed(self, pool: str, provider: str, instances: list[Instance]) -> None:
        """What the provider listed this pass (adopt unknown instances, close vanished ones)."""
        ...

    async def interrupted(self, pool: str, agent_id: str, reason: str) -> None:
        """The cloud took back the instance of ``agent_id`` (``reason``, e.g. "preempted by
        GCP"): its work goes back to the queue without counting as a failure."""
        ...


class PoolLoop:
    def __init__(
        self,
        pool: str,
        config: ProviderConfig,
        provider: Provider,
        world: PoolWorld,
        clock: Callable[[], datetime],
        tick: timedelta = DEFAULT_TICK,
        decider: ScaleDecider | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.provider = provider
        self.world = world
        self.clock = clock
        self.tick = tick
        self.decider = decider or ScaleDecider()
        self.status = PoolStatus()
        self.backoffs: dict[OfferKey, Backoff] = {}
        self.spot_unavailable_since: datetime | None = None
        # Arrivals and boot times for max_idle_agent_period auto (bounded; in memory).
        self.history = HistoryRecorder(clock())
        self._offers: tuple[list[Offer], datetime] | None = None
        self._interrupted: set[str] = set()  # instances whose interruption was handled
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Called when the status line changes, so waiting tasks can say why they wait.
        self.on_status_change: Callable[[], None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"provisioner-{self.pool}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _seed_history(self) -> None:
        """Start ``auto`` and the warm pool from what the master's database remembers, when the
        world can say (``history(pool, now)``; the tests' fakes need not)."""
        remember = getattr(self.world, "history", None)
        if remember is None:
            return
        try:
            self.history.seed(await remember(self.pool, self.clock()))
        except Exception:
            log.exception("pool %s: could not read its history; learning from now", self.pool)

    async def _run(self) -> None:
        await self._seed_history()
        while True:
            try:
                await self.run_pass()
            except Exception as exc:
                log.exception("provisioning pass of pool %s failed", self.pool)
                self.status.summary = f"provisioning pass failed: {exc}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick.total_seconds())
            self._wake.clear()

    # ---- one pass ---------------------------------------------------------------------------

    async def run_pass(self) -> Decision:
        now = self.clock()
        instances = await asyncio.to_thread(self.provider.list_instances)
        refused = await self._follow_launches()
        instances = [i for i in instances if i.id not in refused]
        instances = await self._handle_interruptions(instances)
        await self.world.observed(self.pool, self.config.type, instances)
        offers = await self._current_offers(now)
        demand = await self.world.demand(self.pool)
        agents = await self.world.agents(self.pool)
        self._expire_backoffs(now)
        self.history.observe(now, demand, instances, agents)
        decision = self._decide(instances, offers, demand, agents, now)
        for drain in decision.drains:
            await self.world.drain(drain.agent_id, drain.reason)
            await self.world.event(self.pool, drain.agent_id, "draining", drain.reason)
        if decision.terminations:
            await self._terminate(decision)
        for _ in range(MAX_RETRIES_PER_PASS):
            if not decision.launches or not await self._launch(decision):
                break
            # A capacity error backed off an offer: ask again, the next offer may do.
            decision = self._decide(instances, offers, demand, agents, now, launches_only=True)
        summary = decision.status or self.status.summary
        changed = summary != self.status.summary
        self.status.summary = summary
        self.status.instances = instances
        self.status.backoffs = list(self.backoffs.values())
        self.status.pending_slots = sum(d.slots for d in demand)
        self.status.last_pass = now
        if changed and self.on_status_change is not None:
            self.on_status_change()
        return decision

    def _decide(
        self,
        instances: list[Instance],
        offers: list[Offer],
        demand: list[Demand],
        agents: list[AgentInfo],
        now: datetime,
        launches_only: bool = False,
    ) -> Decision:
        snapshot = PoolSnapshot(
            pool=self.pool,
            pending=tuple(demand),
            instances=tuple(instances),
            agents=tuple(agents),
            offers=tuple(offers),
            backoffs=tuple(self.backoffs.values()),
            spot_unavailable_since=self.spot_unavailable_since,
            history=self.history.history(now),
        )
        decision = self.decider.decide(snapshot, self.config, now)
        # The decider says whether spot was usable; the fallback delay counts from the first
        # pass that found it not (backed off, over spot_max_price, or not offered at all).
        if not decision.spot_unavailable:
            self.spot_unavailable_since = None
        elif self.spot_unavailable_since is None:
            self.spot_unavailable_since = now
            if self.config.spot_fallback.delay == timedelta(0):
                snapshot = replace(snapshot, spot_unavailable_since=now)
                decision = self.decider.decide(snapshot, self.config, now)
        if launches_only:
            decision.drains, decision.terminations = [], []
        return decision

    async def _current_offers(self, now: datetime) -> list[Offer]:
        if self._offers is None or now - self._offers[1] > OFFERS_TTL:
            self._offers = (await asyncio.to_thread(self.provider.offers), now)
        return self._offers[0]

    def _expire_backoffs(self, now: datetime) -> None:
        for key, backoff in list(self.backoffs.items()):
            if backoff.until <= now and backoff.failures == 0:
                del self.backoffs[key]

    async def _terminate(self, decision: Decision) -> None:
        reasons = {t.instance_id: t.reason for t in decision.terminations}
        results = await asyncio.to_thread(self.provider.terminate, list(reasons))
        for result in results:
            if result.ok:
                await self.world.terminated(
                    self.pool, result.instance_id, reasons[result.instance_id]
                )
            else:
                await self.world.event(
                    self.pool, result.instance_id, "terminate_failed", result.message
                )

    async def _follow_launches(self) -> set[str]:
        """Launches the cloud refused after accepting them: their instances are recorded as
        ended with the cloud's reason, and their offers backed off as if the launch call had
        failed (once per offer per pass). Returns the refused instances' ids."""
        if not isinstance(self.provider, FollowsLaunches):
            return set()
        failed = await asyncio.to_thread(self.provider.failed_launches)
        handled: set[OfferKey] = set()
        for launch in failed:
            error = launch.error
            if launch.instance_id is not None:
                reason = f"launch refused: {error.message}"
                await self.world.terminated(self.pool, launch.instance_id, reason)
            if error.offer is None or error.offer in handled:
                await self.world.event(
                    self.pool, None, f"launch_failed:{error.error_class.value}", error.message
                )
                continue
            handled.add(error.offer)
            await self._launch_failed(error.offer, error)
        return {f.instance_id for f in failed if f.instance_id is not None}

    async def _handle_interruptions(self, instances: list[Instance]) -> list[Instance]:
        """Instances the cloud took back: their agents' work is re-queued (without spending a
        restart) and they are terminated at once. Returns the instances still listed."""
        taken = [i for i in instances if i.interruption is not None]
        self._interrupted &= {i.id for i in taken}
        fresh = [i for i in taken if i.id not in self._interrupted]
        for instance in fresh:
            reason = instance.interruption or "interrupted"
            await self.world.interrupted(self.pool, instance.agent_id or instance.id, reason)
            await self.world.event(self.pool, instance.id, "interrupted", reason)
        if not fresh:
            return instances
        reasons = {i.id: i.interruption or "interrupted" for i in fresh}
        results = await asyncio.to_thread(self.provider.terminate, list(reasons))
        gone = set()
        for result in results:
            if result.ok:
                gone.add(result.instance_id)
                self._interrupted.add(result.instance_id)
                await self.world.terminated(
                    self.pool, result.instance_id, reasons[result.instance_id]
                )
            else:
                await self.world.event(
                    self.pool, result.instance_id, "terminate_failed", result.message
                )
        return [i for i in instances if i.id not in gone]

    async def _launch(self, decision: Decision) -> bool:
        """Execute the launches; True when a capacity error means the decider should retry."""
        for launch in decision.launches:
            token = f"{self.pool}-{uuid.uuid4().hex}"
            try:
                created = await asyncio.to_thread(
                    self.provider.launch, launch.offer, launch.count, token
                )
            except ProviderError as exc:
                return await self._launch_failed(launch.offer.key, exc)
            self.status.degraded = None
            self.backoffs.pop(launch.offer.key, None)
            for instance in created:
                await self.world.launched(self.pool, self.config.type, instance, launch.reason)
        return False

    async def _launch_failed(self, offer: OfferKey, exc: ProviderError) -> bool:
        now = self.clock()
        kind = exc.error_class
        await self.world.event(self.pool, None, f"launch_failed:{kind.value}", exc.message)
        if kind == ErrorClass.CAPACITY:
            self._back_off(offer, now, exc.message)
            return True
        if kind == ErrorClass.QUOTA:
            keys = [o.key for o in self._offers[0]] if self._offers else [offer]
            for candidate in keys:
                if candidate.market == offer.market:
                    self._back_off(candidate, now, exc.message)
            return True
        if kind == ErrorClass.CONFIG:
            # Retrying cannot help until someone fixes the config: wait like a capacity error
            # (doubling), so a waiting task does not trigger a failed launch every pass.
            self.status.degraded = exc.message
            self._back_off(offer, now, exc.message)
            return False
        # Throttling and transient errors: nothing wrong with the offer; try again soon.
        self.backoffs[offer] = Backoff(offer, now + TRANSIENT_BACKOFF, 0, exc.message)
        return False

    def _back_off(self, key: OfferKey, now: datetime, reason: str) -> None:
        previous = self.backoffs.get(key)
        failures = (previous.failures if previous else 0) + 1
        backoff = self.config.capacity_backoff
        # Cap the exponent: past the cap the delay is backoff.max anyway, and 2**n of a large
        # n would overflow timedelta after a day of failures.
        doublings = min(failures - 1, MAX_BACKOFF_DOUBLINGS)
        delay = min(backoff.initial * (2**doublings), backoff.max)
        self.backoffs[key] = Backoff(key, now + delay, failures, reason)
        log.warning("pool %s: %s unavailable until %s: %s", self.pool, key, now + delay, reason)
