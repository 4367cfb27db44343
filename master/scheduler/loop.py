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
    PROTOCOL_VERSION,
    AgentOptions,
    AllocationExited,
    AllocationStarted,
    KillAllocation,
    Reject,
    StartAllocation,
    Welcome,
)
from master.config import MasterConfig
from master.db import Database
from master.logs import LogStore
from master.scheduler import snapshot, store
from master.scheduler.fit import AgentCapacity, PoolCapacity, fit, static_capacity
from master.scheduler.state import (
    AgentConnected,
    AgentDisconnected,
    AgentReport,
    Allocation,
    AllocationState,
    AllocationSubmitted,
    ConnectedAgent,
    DemandHook,
    Event,
    ExitHook,
    KillTask,
    LostAgent,
    PreemptHook,
    ReconnectDeadline,
    Reschedule,
    SetAgentState,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class SchedulerError(Exception):
    """An event the scheduler refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Scheduler:
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
        self.started_at = clock()
        self.pools_with_history: set[str] = set()
        self.exit_hooks: list[ExitHook] = []
        self.preempt_hooks: dict[str, PreemptHook] = {}
        self.demand_hooks: list[DemandHook] = []
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
            case AgentConnected():
                return await self._agent_connected(event)
            case AgentDisconnected():
                return await self._agent_disconnected(event)
            case AgentReport():
                return await self._agent_report(event)
            case SetAgentState():
                return await self._set_agent_state(event)
            case ReconnectDeadline():
                return await self._reconnect_deadline(event)
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
            if agent is not None:
                await _send(agent, KillAllocation(allocation_id=allocation.id, reason=reason))

    async def _set_state(self, allocation: Allocation, state: AllocationState) -> None:
        allocation.state = state
        await self.db.run(partial(store.save_state, allocation=allocation))

    async def _finish(self, allocation: Allocation, exit_code: int | None, reason: str) -> None:
        """End ``allocation`` for good: record why, revoke its token, free its slots."""
        self.allocations.pop(allocation.id, None)
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

    # ---- agents --------------------------------------------------------------------------

    async def _agent_connected(self, event: AgentConnected) -> Welcome | Reject:
        """Answer a hello on the agent's link — before the pass that follows this event can
        send it work — and return the answer."""
        answer = await self._admit(event)
        try:
            await event.link.send(answer)
        except ConnectionError:
            log.warning("agent %s left before its %s", event.hello.agent_id, answer.type)
        return answer

    async def _admit(self, event: AgentConnected) -> Welcome | Reject:
        hello, now = event.hello, self.clock()
        if hello.protocol_version != PROTOCOL_VERSION:
            return Reject(
                reason=f"agent speaks protocol version {hello.protocol_version}, this master "
                f"speaks {PROTOCOL_VERSION}: run the same Flotilla version on both"
            )
        pools = [p.pool_name for p in self.config.resource_pools]
        if hello.resource_pool not in pools:
            return Reject(
                reason=f"unknown resource pool '{hello.resource_pool}'; this master has {pools}"
            )
        previous = self.agents.get(hello.agent_id)
        if previous is not None and previous.link is not event.link:
            log.warning("agent %s connected again; closing its previous link", hello.agent_id)
            await previous.link.close("replaced by a newer connection of the same agent")

        row = await self.db.run(partial(store.agent_joined, hello=hello, now=now))
        self.agents[hello.agent_id] = ConnectedAgent(
            id=hello.agent_id,
            pool=hello.resource_pool,
            slots=list(hello.slots),
            link=event.link,
            version=hello.version,
            addresses=list(hello.addresses),
            registered_at=row.registered_at,
            connected_at=now,
            enabled=row.enabled,
            draining=row.draining,
            idle_since=now,
        )
        self.lost.pop(hello.agent_id, None)
        still_running = {r.allocation_id for r in hello.running}
        reattach = []
        for allocation in list(self.allocations.values()):
            if hello.agent_id not in allocation.agent_slots:
                continue
            if allocation.id in still_running:
                reattach.append(allocation.id)
                await self.logs.master_line(
                    allocation.task_id,
                    allocation.id,
                    f"re-attached to agent '{hello.agent_id}'",
                    now,
                )
            elif allocation.state != AllocationState.QUEUED:
                await self._agent_lost_allocation(
                    allocation,
                    f"agent '{hello.agent_id}' reconnected without this task (agent restarted?)",
                )
        log.info(
            "agent %s joined pool %s with %d slots",
            hello.agent_id,
            hello.resource_pool,
            len(hello.slots),
        )
        return Welcome(options=self._agent_options(), reattach=reattach)

    def _agent_options(self) -> AgentOptions:
        return AgentOptions(
            ping_interval=self.config.agent_ping_interval.total_seconds(),
            ping_timeout=self.config.agent_ping_timeout.total_seconds(),
            log_batch_interval=0.2,
        )

    async def _agent_disconnected(self, event: AgentDisconnected) -> None:
        agent = self.agents.get(event.agent_id)
        if agent is None or agent.link is not event.link:
            return
        del self.agents[event.agent_id]
        now = self.clock()
        await self.db.run(partial(store.agent_left, agent_id=event.agent_id, now=now))
        log.warning("agent %s disconnected: %s", event.agent_id, event.reason)
        self.lost[event.agent_id] = LostAgent(pool=agent.pool, slots=len(agent.slots), since=now)
        self._start_timer(event.agent_id, now)
        affected = [a for a in self.allocations.values() if event.agent_id in a.agent_slots]
        wait = self.config.agent_reconnect_wait.total_seconds()
        for allocation in affected:
            await self.logs.master_line(
                allocation.task_id,
                allocation.id,
                f"agent '{event.agent_id}' lost its connection ({event.reason}); "
                f"waiting up to {wait:g}s for it to reconnect",
                now,
                "WARNING",
            )

    def _start_timer(self, agent_id: str, since: datetime) -> None:
        async def fire() -> None:
            await asyncio.sleep(self.config.agent_reconnect_wait.total_seconds())
            self.post(ReconnectDeadline(agent_id=agent_id, since=since))

        timer = asyncio.create_task(fire())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

    async def _reconnect_deadline(self, event: ReconnectDeadline) -> None:
        lost = self.lost.get(event.agent_id)
        if lost is None or lost.since != event.since:
            return
        del self.lost[event.agent_id]
        wait = self.config.agent_reconnect_wait.total_seconds()
        for allocation in list(self.allocations.values()):
            if event.agent_id in allocation.agent_slots:
                await self._agent_lost_allocation(
                    allocation,
                    f"agent '{event.agent_id}' lost its connection to the master and did not "
                    f"reconnect within {wait:g}s; the task is considered failed",
                )

    async def _agent_lost_allocation(self, allocation: Allocation, reason: str) -> None:
        """An agent no longer runs ``allocation``: fail it, unless it never started there —
        then nothing of it ran, and it goes back to the queue."""
        if allocation.kill_reason is not None:
            await self._finish(allocation, None, allocation.kill_reason)
            return
        if allocation.state != AllocationState.STARTING:
            await self._finish(allocation, None, reason)
            return
        allocation.agent_slots = {}
        allocation.state = AllocationState.QUEUED
        await self.db.run(partial(store.requeue, allocation=allocation))
        await self.logs.master_line(
            allocation.task_id,
            allocation.id,
            f"{reason}; it had not started there, so it is queued again",
            self.clock(),
            "WARNING",
        )

    async def _agent_report(self, event: AgentReport) -> None:
        agent = self.agents.get(event.agent_id)
        if agent is None or agent.link is not event.link:
            return
        message = event.message
        allocation = self.allocations.get(message.allocation_id)
        if allocation is None or event.agent_id not in allocation.agent_slots:
            return
        if isinstance(message, AllocationStarted):
            allocation.started_at = message.started_at
            if allocation.state == AllocationState.STARTING:
                await self._set_state(allocation, AllocationState.RUNNING)
            await self.logs.master_line(
                allocation.task_id,
                allocation.id,
                f"running on agent '{event.agent_id}' (pid {message.pid})",
                self.clock(),
            )
            return
        await self._exited(allocation, message)

    async def _exited(self, allocation: Allocation, message: AllocationExited) -> None:
        code = message.exit_code
        if allocation.kill_reason is not None:
            reason = f"{allocation.kill_reason} (exit code {code})"
        elif message.reason:
            reason = message.reason
        elif code == 0:
            reason = "exited successfully (exit code 0)"
        elif code is not None and code < 0:
            reason = f"killed by signal {-code}"
        else:
            reason = f"exited with code {code}"
        await self._finish(allocation, code, reason)

    async def _set_agent_state(self, event: SetAgentState) -> ConnectedAgent:
        agent = self.agents.get(event.agent_id)
        if agent is None:
            raise SchedulerError(404, f"agent '{event.agent_id}' not found (or not connected)")
        agent.enabled = event.enabled
        agent.draining = (not event.enabled) and event.drain

        await self.db.run(
            partial(
                store.save_agent_flags,
                agent_id=agent.id,
                enabled=agent.enabled,
                draining=agent.draining,
            )
        )
        if not event.enabled and not event.drain:
            for allocation in list(self.allocations.values()):
                if agent.id in allocation.agent_slots:
                    await self._kill(allocation, f"killed: agent '{agent.id}' was disabled")
        return agent

    # ---- the pass ------------------------------------------------------------------------

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

    async def _preempt(self, allocation: Allocation) -> None:
        hook = self.preempt_hooks.get(allocation.task_type)
        if hook is None or allocation.preempting:
            return
        allocation.preempting = True
        await self.logs.master_line(
            allocation.task_id,
            allocation.id,
            "preempted: a higher-priority task needs these slots",
            self.clock(),
        )
        await hook(allocation)

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
                ),
            )


async def _send(agent: ConnectedAgent, message: Any) -> None:
    try:
        await agent.link.send(message)
    except ConnectionError as exc:
        # The socket's reader will report the disconnect; the reconnect wait covers the rest.
        log.warning("could not send %s to agent %s: %s", message.type, agent.id, exc)
