"""The scheduler: the one owner of cluster state.

HTTP handlers and agent sockets ``post`` events; a single asyncio task consumes them in order,
updates memory, writes the database (the durable truth), talks to agents, and after every event
runs one scheduling pass (``fit``). Nothing else mutates agents, slots or allocations.

On start it rebuilds from the database: queued allocations queue again; allocations that were
running wait ``agent_reconnect_wait`` for their agent to come back and re-attach them (the agent
keeps running its tasks while the master is away), and fail with that reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from agent.protocol import (
    BindMount,
    KillAllocation,
    StartAllocation,
)
from master.config import MasterConfig
from master.db import Database
from master.logs import LogStore
from master.scheduler import snapshot, store
from master.scheduler.agent_events import AgentEvents
from master.scheduler.fit import AgentCapacity, PoolCapacity, fit, static_capacity
from master.scheduler.state import (
    AgentConnected,
    AgentDisconnected,
    AgentInterrupted,
    AgentNotice,
    AgentReport,
    Allocation,
    AllocationReady,
    AllocationState,
    AllocationSubmitted,
    ConnectedAgent,
    DemandHook,
    Event,
    ExitHook,
    KillTask,
    LaunchHook,
    LostAgent,
    NoticeHook,
    PreemptHook,
    Preemption,
    ReconnectDeadline,
    Reschedule,
    SchedulerError,
    SetAgentState,
    SetSlotState,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class Scheduler(AgentEvents):
    def __init__(
        self,
        config: MasterConfig,
        db: Database,
        logs: LogStore,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.db = db
        self.logs = logs
        self.clock = clock
        self.agents: dict[str, ConnectedAgent] = {}
        self.allocations: dict[str, Allocation] = {}
        # Agents that went away less than agent_reconnect_wait ago: their tasks wait for them,
        # and their slots still count towards what their pool can ever offer.
        self.lost: dict[str, LostAgent] = {}
        # Disabled slots by agent, kept across an agent's reconnects (not a master restart).
        self.slots_disabled: dict[str, set[int]] = {}
        self.started_at = clock()
        self.pools_with_history: set[str] = set()
        self.exit_hooks: list[ExitHook] = []
        self.preempt_hooks: dict[str, PreemptHook] = {}
        self.demand_hooks: list[DemandHook] = []
        self.notice_hooks: list[NoticeHook] = []
        self.launch_hooks: list[LaunchHook] = []
        # Pools whose size a provider decides: what they can ever offer, and their status line.
        self.pool_capacity: dict[str, PoolCapacity] = {}
        self.pool_status: dict[str, Callable[[], str]] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._rebuild()
        self._runner = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        for task in [self._runner, *self._timers]:
            if task is not None:
                task.cancel()
        for task in [self._runner, *self._timers]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def post(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def call(self, event: Event) -> Any:
        """Post ``event`` and wait for its answer (raises SchedulerError on refusal)."""
        event.reply = asyncio.get_running_loop().create_future()
        self.post(event)
        return await event.reply

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                result = await self._handle(event)
                await self._schedule()
                if event.reply is not None and not event.reply.done():
                    event.reply.set_result(result)
            except SchedulerError as exc:
                if event.reply is not None and not event.reply.done():
                    event.reply.set_exception(exc)
            except Exception as exc:
                log.exception("scheduler failed to handle %s", type(event).__name__)
                if event.reply is not None and not event.reply.done():
                    event.reply.set_exception(exc)

    async def _handle(self, event: Event) -> Any:
        match event:
            case AllocationSubmitted():
                return await self._submitted(event)
            case KillTask():
                return await self._kill_task(event)
            case AllocationReady():
                return await self._ready(event)
            case AgentConnected():
                return await self._agent_connected(event)
            case AgentDisconnected():
                return await self._agent_disconnected(event)
            case AgentReport():
                return await self._agent_report(event)
            case AgentNotice():
                return await self._agent_notice(event)
            case SetAgentState():
                return await self._set_agent_state(event)
            case SetSlotState():
                return await self._set_slot_state(event)
            case ReconnectDeadline():
                return await self._reconnect_deadline(event)
            case AgentInterrupted():
                return await self._agent_interrupted(event)
            case Reschedule():
                return None
        raise TypeError(f"unknown event {event!r}")

    # ---- rebuilding after a restart ------------------------------------------------------

    async def _rebuild(self) -> None:
        now = self.clock()
        self.pools_with_history = set(await self.db.run(store.pools_with_agents))
        for allocation in await self.db.run(store.load_active):
            self.allocations[allocation.id] = allocation
            for agent_id in allocation.agent_slots:
                if agent_id not in self.lost:
                    self.lost[agent_id] = LostAgent(pool=allocation.pool, slots=0, since=now)
                    self._start_timer(agent_id, now)
        if self.allocations:
            log.info(
                "re-queued %d allocations; waiting for agents %s to re-attach running ones",
                len(self.allocations),
                sorted(self.lost),
            )

    # ---- tasks ---------------------------------------------------------------------------

    async def _submitted(self, event: AllocationSubmitted) -> str | None:
        try:
            allocation = await self.db.run(
                partial(store.load_allocation, allocation_id=event.allocation_id)
            )
        except store.AllocationNotFound as exc:
            raise SchedulerError(404, f"allocation {event.allocation_id} not found") from exc
        self.allocations[allocation.id] = allocation
        await self.logs.master_line(
            allocation.task_id,
            allocation.id,
            f"queued: {allocation.slots} slot(s) in "
            f"resource pool '{allocation.pool}', priority {allocation.priority}",
            self.clock(),
        )
        # Answer after a pass, with the rejection reason if it can never fit.
        await self._schedule()
        return allocation.kill_reason if allocation.id not in self.allocations else None

    async def _ready(self, event: AllocationReady) -> None:
        allocation = self.allocations.get(event.allocation_id)
        if allocation is None:
            raise SchedulerError(404, f"allocation {event.allocation_id} is not active")
        if allocation.state not in (AllocationState.STARTING, AllocationState.RUNNING):
            raise SchedulerError(
                409, f"allocation {allocation.id} is {allocation.state.value}, not starting"
            )
        if allocation.service_ready:
            raise SchedulerError(
                409, f"allocation {allocation.id} already reported ready; it may do so only once"
            )
        address = None
        if event.proxy_port is not None:
            host = self._agent_host(allocation)
            if host is None:
                raise SchedulerError(
                    409, f"allocation {allocation.id}: its agent's address is unknown to the master"
                )
            address = (
                f"[{host}]:{event.proxy_port}" if ":" in host else f"{host}:{event.proxy_port}"
            )
        allocation.service_ready = True
        allocation.proxy_address = address
        await self.db.run(partial(store.save_state, allocation=allocation))
        where = f" at {address}" if address else ""
        await self.logs.master_line(
            allocation.task_id, allocation.id, f"service ready{where}", self.clock()
        )

    def _agent_host(self, allocation: Allocation) -> str | None:
        """The address of the (first) agent running ``allocation``, as its connection shows."""
        for agent_id in allocation.agent_slots:
            agent = self.agents.get(agent_id)
            if agent is not None and agent.peer_host:
                return agent.peer_host
        return None

    async def _kill_task(self, event: KillTask) -> bool:
        found = False
        for allocation in list(self.allocations.values()):
            if allocation.task_id != event.task_id:
                continue
            found = True
            await self._kill(allocation, event.reason)
        return found

    async def _kill(self, allocation: Allocation, reason: str) -> None:
        if allocation.kill_reason is None:
            allocation.kill_reason = reason
        if allocation.state == AllocationState.QUEUED:
            await self._finish(allocation, None, reason)
            return
        await self._set_state(allocation, AllocationState.TERMINATING)
        await self.logs.master_line(allocation.task_id, allocation.id, reason, self.clock())
        for agent_id in allocation.agent_slots:
            agent = self.agents.get(agent_id)
            if agent is not None and agent_id not in allocation.exited:
                await _send(agent, KillAllocation(allocation_id=allocation.id, reason=reason))

    async def _set_state(self, allocation: Allocation, state: AllocationState) -> None:
        allocation.state = state
        await self.db.run(partial(store.save_state, allocation=allocation))

    async def _finish(self, allocation: Allocation, exit_code: int | None, reason: str) -> None:
        """End ``allocation`` for good: record why, revoke its token, free its slots."""
        allocation.state = AllocationState.TERMINATED
        now = self.clock()
        # The reason goes into the log before the task is marked ended, so a log follower
        # that sees the end has already been able to read why.
        level = "INFO" if exit_code == 0 else "ERROR"
        await self.logs.master_line(allocation.task_id, allocation.id, reason, now, level)
        await self.db.run(
            partial(
                store.save_finished,
                allocation=allocation,
                exit_code=exit_code,
                reason=reason,
                now=now,
            )
        )
        # Forgotten only once stored: whoever no longer finds it in memory reads its end.
        self.allocations.pop(allocation.id, None)
        if len(allocation.agent_slots) > 1:
            # Ended without every part's exit (an agent was lost): stop the parts still running.
            for agent_id in allocation.agent_slots:
                agent = self.agents.get(agent_id)
                if agent is not None and agent_id not in allocation.exited:
                    await _send(agent, KillAllocation(allocation_id=allocation.id, reason=reason))
        self.logs.wake(allocation.task_id)
        self._update_idle(allocation.agent_slots, now)
        for hook in self.exit_hooks:
            try:
                await hook(allocation, exit_code, reason)
            except Exception:
                log.exception("exit hook failed for allocation %s", allocation.id)

    def _update_idle(self, agent_ids: Iterable[str], now: datetime) -> None:
        for agent_id in agent_ids:
            agent = self.agents.get(agent_id)
            if agent is None:
                continue
            busy = any(agent_id in a.agent_slots for a in self.allocations.values())
            if busy:
                agent.idle_since = None
            elif agent.idle_since is None:
                agent.idle_since = now

    # ---- the pass ------------------------------------------------------------------------

    def agent_slot_counts(self, allocation_id: str) -> dict[str, int] | None:
        """How many slots each agent holds of an active allocation (empty while it is queued),
        None for one that is not active; for ``master.rendezvous``."""
        allocation = self.allocations.get(allocation_id)
        if allocation is None:
            return None
        return {agent: len(slots) for agent, slots in allocation.agent_slots.items()}

    def free_slots(self, agent: ConnectedAgent) -> list[int]:
        return snapshot.free_slots(agent, self.allocations.values())

    async def _schedule(self) -> None:
        allocations = list(self.allocations.values())
        requests = snapshot.slot_requests(allocations)
        if not requests:
            return
        agents = snapshot.agent_capacities(self.agents.values(), allocations)
        running = snapshot.running_allocations(allocations)
        result = fit(requests, agents, running, self._capacity(agents))
        for allocation_id, reason in result.unschedulable.items():
            allocation = self.allocations[allocation_id]
            allocation.kill_reason = f"rejected: {reason}"
            await self._finish(allocation, None, allocation.kill_reason)
        for allocation_id, reason in result.waiting.items():
            allocation = self.allocations[allocation_id]
            status = self.pool_status.get(allocation.pool)
            if status is not None:
                reason = f"{reason}; pool '{allocation.pool}': {status()}"
            if allocation.waiting_reason != reason:
                allocation.waiting_reason = reason
                await self.logs.master_line(allocation.task_id, allocation_id, reason, self.clock())
        for allocation_id in result.preemptions:
            await self._preempt(self.allocations[allocation_id])
        for allocation_id, placement in result.assignments.items():
            await self._launch(self.allocations[allocation_id], placement)
        if result.waiting:
            for pool in {self.allocations[a].pool for a in result.waiting}:
                for hook in self.demand_hooks:
                    hook(pool)

    def capacities(self) -> dict[str, PoolCapacity]:
        """What each pool can ever offer, judged as the next pass would; a pool missing is not
        known yet (no agents). Read on the event loop, between events."""
        allocations = list(self.allocations.values())
        return self._capacity(snapshot.agent_capacities(self.agents.values(), allocations))

    def _capacity(self, agents: list[AgentCapacity]) -> dict[str, PoolCapacity]:
        """What each pool can ever offer: its agents, including those briefly gone. After a
        master start, pools that had agents before stay unknown (nothing is rejected) until
        the agents have had ``agent_reconnect_wait`` to come back."""
        capacity_of_lost = [
            AgentCapacity(agent_id, a.pool, a.slots, (), schedulable=False)
            for agent_id, a in self.lost.items()
            if a.slots
        ]
        capacity = static_capacity(agents + capacity_of_lost)
        if self.clock() - self.started_at < self.config.agent_reconnect_wait:
            for pool in self.pools_with_history:
                capacity.pop(pool, None)
        capacity.update(self.pool_capacity)
        return capacity

    async def _preempt(
        self,
        allocation: Allocation,
        why: Preemption = Preemption("a higher-priority task needs these slots"),
    ) -> bool:
        """Ask a preemptible task to checkpoint and exit; False if nothing can ask it."""
        hook = self.preempt_hooks.get(allocation.task_type)
        if hook is None:
            return False
        if allocation.preempting and why.deadline is None:
            return True
        allocation.preempting = True
        await self.logs.master_line(
            allocation.task_id, allocation.id, f"preempted: {why.reason}", self.clock()
        )
        await hook(allocation, why)
        return True

    async def _launch(self, allocation: Allocation, placement: dict[str, tuple[int, ...]]) -> None:
        allocation.agent_slots = {agent: list(slots) for agent, slots in placement.items()}
        allocation.waiting_reason = None
        now = self.clock()
        self._update_idle(allocation.agent_slots, now)

        session_token = await self.db.run(
            partial(
                store.issue_allocation_token,
                allocation=allocation,
                lifetime=self.config.token_lifetime,
                now=now,
            )
        )
        await self._set_state(allocation, AllocationState.STARTING)
        env = {
            **allocation.env,
            "DET_MASTER": self.config.master_url,
            "DET_TASK_ID": allocation.task_id,
            "DET_ALLOCATION_ID": allocation.id,
            "DET_SESSION_TOKEN": session_token,
            "DET_USER": allocation.owner,
            "DET_MASTER_UNREACHABLE_TIMEOUT": str(
                self.config.master_unreachable_timeout.total_seconds()
            ),
        }
        for agent_id, slots in allocation.agent_slots.items():
            await self.logs.master_line(
                allocation.task_id,
                allocation.id,
                f"assigned to agent '{agent_id}' slots {slots}",
                now,
            )
            await _send(
                self.agents[agent_id],
                StartAllocation(
                    allocation_id=allocation.id,
                    task_id=allocation.task_id,
                    argv=allocation.argv,
                    env=env,
                    slot_ids=slots,
                    files=allocation.files,
                    bind_mounts=[BindMount(**m) for m in allocation.bind_mounts],
                ),
            )
        for hook in self.launch_hooks:
            hook(allocation)


async def _send(agent: ConnectedAgent, message: Any) -> None:
    try:
        await agent.link.send(message)
    except ConnectionError as exc:
        # The socket's reader will report the disconnect; the reconnect wait covers the rest.
        log.warning("could not send %s to agent %s: %s", message.type, agent.id, exc)
