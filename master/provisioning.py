"""Wiring the provisioner into the master: one ``PoolLoop`` per pool that has a ``provider``.

``MasterWorld`` is the loop's view of the master: pending demand and agents come from the
scheduler's live state (read on the event loop, between its events); drains go through the
scheduler as events; instances and their events are recorded in the database — the record of
what every instance cost and why the fleet is the size it is.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from master import models
from master.config import MasterConfig
from master.db import Database
from master.scheduler.fit import PoolCapacity
from master.scheduler.loop import Scheduler, SchedulerError
from master.scheduler.state import AgentInterrupted, AllocationState, Reschedule, SetAgentState
from master.spot_timeline import SpotTimeline
from provisioner.base import Provider
from provisioner.config import AWSProviderConfig, GCPProviderConfig, PoolProvider, ProviderConfig
from provisioner.history import HistorySeed
from provisioner.idle_policy import BOOTS_USED
from provisioner.local import LocalProvider
from provisioner.loop import PoolLoop
from provisioner.types import AgentInfo, Demand, Instance, InstanceState, LaunchedInstance

log = logging.getLogger(__name__)


class MasterWorld:
    def __init__(self, scheduler: Scheduler, db: Database) -> None:
        self.scheduler = scheduler
        self.db = db

    async def demand(self, pool: str) -> list[Demand]:
        """Queued tasks, and the tasks on agents whose instance is being reclaimed (spot
        notice, acted-on rebalance): their replacement is wanted now, not once they re-queue."""
        queued = [
            Demand(job_id=a.task_id, slots=a.slots, single_agent=a.single_agent)
            for a in self.scheduler.allocations.values()
            if a.pool == pool and a.state == AllocationState.QUEUED
        ]
        interrupting = {agent.id for agent in self.scheduler.agents.values() if agent.interrupting}
        displaced = [
            Demand(job_id=f"{a.task_id} on reclaimed {agent_id}", slots=len(slots))
            for a in self.scheduler.allocations.values()
            if a.pool == pool and a.state != AllocationState.QUEUED and a.kill_reason is None
            for agent_id, slots in a.agent_slots.items()
            if agent_id in interrupting
        ]
        return queued + displaced

    async def agents(self, pool: str) -> list[AgentInfo]:
        connected = [
            AgentInfo(
                agent_id=a.id,
                instance_id=a.id,
                slots=len(a.slots),
                idle_since=a.idle_since,
                draining=a.draining or not a.enabled,
                interrupting=a.interrupting,
            )
            for a in self.scheduler.agents.values()
            if a.pool == pool
        ]
        lost = [
            AgentInfo(
                agent_id=agent_id,
                instance_id=agent_id,
                slots=a.slots,
                idle_since=None,
                disconnected_since=a.since,
            )
            for agent_id, a in self.scheduler.lost.items()
            if a.pool == pool
        ]
        joined = {a.id: a.connected_at for a in self.scheduler.agents.values() if a.pool == pool}
        known = {a.agent_id for a in connected + lost}
        gone = await self.db.run(partial(_record_joins, pool=pool, joined=joined, known=known))
        return connected + lost + gone

    async def history(self, pool: str, now: datetime) -> HistorySeed:
        """The pool's arrivals of the last 8 days and its last boot times, for the loop's
        ``auto`` idle rule and warm pool (read once, when the loop starts)."""
        return await self.db.run(partial(_pool_history, pool=pool, now=now))

    async def drain(self, agent_id: str, reason: str) -> None:
        try:
            await self.scheduler.call(SetAgentState(agent_id=agent_id, enabled=False, drain=True))
        except SchedulerError:
            log.info("agent %s left before it could be drained (%s)", agent_id, reason)

    async def launched(
        self, pool: str, provider: str, instance: LaunchedInstance, reason: str
    ) -> None:
        await self.db.run(
            partial(_record_launch, pool=pool, provider=provider, instance=instance, reason=reason)
        )

    async def terminated(self, pool: str, instance_id: str, reason: str) -> None:
        now = self.scheduler.clock()
        await self.db.run(
            partial(_record_termination, pool=pool, instance_id=instance_id, reason=reason, now=now)
        )

    async def event(self, pool: str, instance_id: str | None, kind: str, reason: str) -> None:
        now = self.scheduler.clock()
        await self.db.run(
            partial(
                _record_event, pool=pool, instance_id=instance_id, kind=kind, reason=reason, at=now
            )
        )

    async def interrupted(self, pool: str, agent_id: str, reason: str) -> None:
        try:
            await self.scheduler.call(AgentInterrupted(agent_id=agent_id, reason=reason))
        except SchedulerError:
            log.info("agent %s: nothing to re-queue after its instance was %s", agent_id, reason)

    async def observed(self, pool: str, provider: str, instances: list[Instance]) -> None:
        now = self.scheduler.clock()
        await self.db.run(
            partial(_reconcile, pool=pool, provider=provider, instances=instances, now=now)
        )


HISTORY_DAYS = 8  # a week for "the same hour last week", and a day's margin
HISTORY_ARRIVALS = 20_000  # at most this many seeded arrivals (the newest)


def _pool_history(session: Session, pool: str, now: datetime) -> HistorySeed:
    start = now - timedelta(days=HISTORY_DAYS)
    arrivals = session.execute(
        select(models.Allocation.task_id, models.Allocation.created_at, models.Task.slots)
        .join(models.Task, models.Task.id == models.Allocation.task_id)
        .where(models.Task.resource_pool == pool, models.Allocation.created_at >= start)
        .order_by(models.Allocation.created_at.desc())
        .limit(HISTORY_ARRIVALS)
    ).all()
    boots = session.execute(
        select(models.ProvisionedInstance.launched_at, models.ProvisionedInstance.joined_at)
        .where(
            models.ProvisionedInstance.resource_pool == pool,
            models.ProvisionedInstance.joined_at.is_not(None),
        )
        .order_by(models.ProvisionedInstance.launched_at.desc())
        .limit(BOOTS_USED)
    ).all()
    first = session.execute(
        select(func.min(models.Task.created_at)).where(models.Task.resource_pool == pool)
    ).scalar()
    return HistorySeed(
        arrivals=tuple((task, at, slots) for task, at, slots in reversed(arrivals)),
        boot_seconds=tuple(
            (joined - launched).total_seconds()
            for launched, joined in reversed(boots)
            if joined is not None
        ),
        since=max(first, start) if first is not None else None,
    )


def _record_event(
    session: Session, pool: str, instance_id: str | None, kind: str, reason: str, at: datetime
) -> None:
    session.add(
        models.InstanceEvent(
            resource_pool=pool, instance_id=instance_id, at=at, kind=kind, reason=reason
        )
    )


def _record_launch(
    session: Session, pool: str, provider: str, instance: LaunchedInstance, reason: str
) -> None:
    offer = instance.offer
    session.merge(
        models.ProvisionedInstance(
            id=instance.id,
            resource_pool=pool,
            provider=provider,
            instance_type=offer.instance_type,
            zone=offer.zone,
            market=offer.market.value,
            price_per_hour=offer.price_per_hour,
            slots=offer.slots,
            state=InstanceState.PENDING.value,
            launched_at=instance.launched_at,
            launch_reason=reason,
        )
    )
    where = f" in {offer.zone}" if offer.zone else ""
    _record_event(
        session,
        pool,
        instance.id,
        "requested",
        f"{offer.instance_type} {offer.market.value}{where} at ${offer.price_per_hour:.3f}/h: "
        f"{reason}",
        instance.launched_at,
    )


def _record_termination(
    session: Session, pool: str, instance_id: str, reason: str, now: datetime
) -> None:
    session.execute(
        update(models.ProvisionedInstance)
        .where(
            models.ProvisionedInstance.id == instance_id,
            models.ProvisionedInstance.terminated_at.is_(None),
        )
        .values(state=InstanceState.TERMINATED.value, terminated_at=now, termination_reason=reason)
    )
    _record_event(session, pool, instance_id, "terminated", reason, now)


def _record_joins(
    session: Session, pool: str, joined: dict[str, datetime], known: set[str]
) -> list[AgentInfo]:
    """Record instances whose agent just joined, and return the agents of live instances that
    joined once but are neither connected nor within the scheduler's reconnect wait — so the
    decider applies ``max_disconnected_period`` to them, not ``max_agent_starting_period``."""
    rows = session.execute(
        select(models.ProvisionedInstance, models.Agent.last_disconnected_at)
        .outerjoin(models.Agent, models.Agent.id == models.ProvisionedInstance.id)
        .where(
            models.ProvisionedInstance.resource_pool == pool,
            models.ProvisionedInstance.terminated_at.is_(None),
        )
    ).all()
    gone = []
    for row, disconnected_at in rows:
        if row.joined_at is None and row.id in joined:
            row.joined_at = joined[row.id]
            row.state = InstanceState.RUNNING.value
            _record_event(session, pool, row.id, "joined", "its agent connected", joined[row.id])
        elif row.joined_at is not None and row.id not in known:
            gone.append(
                AgentInfo(
                    agent_id=row.id,
                    instance_id=row.id,
                    slots=row.slots,
                    idle_since=None,
                    disconnected_since=disconnected_at or row.joined_at,
                )
            )
    return gone


def _reconcile(
    session: Session, pool: str, provider: str, instances: list[Instance], now: datetime
) -> None:
    """Adopt instances the database does not know; close those the provider no longer lists."""
    listed = {i.id: i for i in instances}
    known = {
        row.id: row
        for row in session.scalars(
            select(models.ProvisionedInstance).where(
                models.ProvisionedInstance.resource_pool == pool,
                models.ProvisionedInstance.terminated_at.is_(None),
            )
        )
    }
    for instance_id, row in known.items():
        if instance_id not in listed:
            # Gone while nobody watched (e.g. stopped with the master down): it ended no later
            # than its agent's last disconnect, if that is known.
            agent = session.get(models.Agent, instance_id)
            last_seen = agent.last_disconnected_at if agent is not None else None
            row.state = InstanceState.TERMINATED.value
            row.terminated_at = (
                last_seen if last_seen is not None and last_seen >= row.launched_at else now
            )
            row.termination_reason = row.termination_reason or "no longer listed by the provider"
            _record_event(session, pool, instance_id, "terminated", row.termination_reason, now)
    for instance_id, instance in listed.items():
        if instance_id in known:
            continue
        if session.get(models.ProvisionedInstance, instance_id) is not None:
            continue
        session.add(
            models.ProvisionedInstance(
                id=instance.id,
                resource_pool=pool,
                provider=provider,
                instance_type=instance.instance_type,
                zone=instance.zone,
                market=instance.market.value,
                price_per_hour=instance.price_per_hour,
                slots=instance.slots,
                state=instance.state.value,
                launched_at=instance.launched_at,
                launch_reason="adopted: found running with this pool's tag",
            )
        )
        _record_event(session, pool, instance.id, "adopted", "found with this pool's tag", now)


def instance_slots(provider: ProviderConfig) -> int:
    """Slots of one instance: configured, else the instance type's GPUs (AWS: the price
    table, the largest of ``instance_types`` in a mixed pool; GCP: ``gpu_num`` plus GPUs
    bundled with the machine type), else 1."""
    if provider.instance_slots is not None:
        return provider.instance_slots
    if isinstance(provider, AWSProviderConfig):
        from provisioner.prices import PriceBook

        book = PriceBook(provider.prices)
        return max(book.slots(instance_type) for instance_type in provider.types)
    if isinstance(provider, GCPProviderConfig):
        from provisioner.gcp_prices import GCPPriceBook

        return GCPPriceBook(provider.prices, provider.spot_prices).slots(provider.instance_type)
    return 1


def agent_logging(config: MasterConfig) -> dict[str, Any] | None:
    """The ``logging`` section for the agents the master launches: its own CloudWatch group,
    region and stream prefix (task logs are the master's to ship, so not that flag)."""
    if config.logging is None:
        return None
    return config.logging.model_dump(mode="json", exclude={"ship_task_logs"})


def make_provider(
    config: MasterConfig, pool: str, provider: PoolProvider, cluster_id: str
) -> Provider:
    if provider.type == "local":
        return LocalProvider(
            provider,
            pool,
            master_url=config.master_url,
            join_token=config.join_token(),
            state_dir=config.resolved_data_dir / "provisioner" / pool,
        )
    from provisioner.user_data import render_user_data

    user_data = render_user_data(
        master_url=config.master_url,
        pool=pool,
        join_token=config.join_token(),
        startup_script=provider.startup_script,
        slots=instance_slots(provider),
        cloud=provider.type,
        logging=agent_logging(config),
    )
    if provider.type == "gcp":
        from provisioner.gcp import GCPProvider  # google-cloud-compute: only for GCP pools
        from provisioner.gcp_prices import GCPPriceBook

        book = GCPPriceBook(provider.prices, provider.spot_prices)
        return GCPProvider(provider, pool, cluster_id, user_data, book)
    from provisioner.aws import AWSProvider  # boto3 is only needed for AWS pools
    from provisioner.prices import PriceBook

    return AWSProvider(provider, pool, cluster_id, user_data, PriceBook(provider.prices))


class Provisioning:
    """The pools' loops: started with the master, woken by the scheduler's demand changes."""

    def __init__(
        self, config: MasterConfig, scheduler: Scheduler, db: Database, cluster_id: str
    ) -> None:
        self.loops: dict[str, PoolLoop] = {}
        self.failed: dict[str, str] = {}  # pool → why its provider could not start
        world = MasterWorld(scheduler, db)
        for pool in config.resource_pools:
            if pool.provider is None:
                continue
            try:
                provider = make_provider(config, pool.pool_name, pool.provider, cluster_id)
            except (ValueError, LookupError) as exc:  # e.g. no AWS region, unknown type
                message = f"provider not started: {exc}"
                log.error("resource pool %s: %s", pool.pool_name, message)
                self.failed[pool.pool_name] = message
                scheduler.pool_status[pool.pool_name] = partial(str, f"DEGRADED: {message}")
                continue
            loop = PoolLoop(
                pool.pool_name,
                pool.provider,
                provider,
                world,
                scheduler.clock,
                tick=pool.provider.provisioning_tick,
            )
            loop.on_status_change = partial(scheduler.post, Reschedule())
            self.loops[pool.pool_name] = loop
            slots = instance_slots(pool.provider)
            scheduler.pool_capacity[pool.pool_name] = PoolCapacity(
                max_agent_slots=slots, max_total_slots=slots * pool.provider.max_instances
            )
            scheduler.pool_status[pool.pool_name] = partial(_summary, loop)
        scheduler.demand_hooks.append(self.wake)
        self.timeline = SpotTimeline(scheduler, world.event, self.wake)

    def wake(self, pool: str) -> None:
        loop = self.loops.get(pool)
        if loop is not None:
            loop.wake()

    def start(self) -> None:
        for loop in self.loops.values():
            loop.start()

    async def stop(self) -> None:
        for loop in self.loops.values():
            await loop.stop()


def _summary(loop: PoolLoop) -> str:
    status = loop.status
    return f"{status.summary} (degraded: {status.degraded})" if status.degraded else status.summary
