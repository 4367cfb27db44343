"""The scheduler: the one owner of cluster state.

HTTP handlers and agent sockets ``post`` events; a single asyncio task consumes them in order
and updates memory. It works in passes: it takes every event queued since the last pass (up to
``MAX_EVENTS_PER_PASS``), handles them in order, runs ONE scheduling pass (``fit``), then stores
what they all changed in one database transaction (the durable truth) and only then talks to
agents, calls hooks and answers the events (see ``work.py``). Nothing else mutates agents, slots
or allocations. Each pass is timed (``stats.py``, ``GET /debug/scheduler``).

On start it rebuilds from the database: queued allocations queue again; allocations that were
running wait ``agent_reconnect_wait`` for their agent to come back and re-attach them (the agent
keeps running its tasks while the master is away), and fail with that reason otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from agent.protocol import (
    BindMount,
    KillAllocation,
    StartAllocation,
)
from master import auth
from master.config import MasterConfig
from master.db import Database
from master.logs import LogStore
from master.scheduler import store
from master.scheduler.agent_events import AgentEvents
from master.scheduler.capacity import CapacityIndex
from master.scheduler.fit import AgentCapacity, FitResult, PoolCapacity, fit, static_capacity
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
from master.scheduler.stats import SchedulerStats
from master.scheduler.work import PassFlusher, PassWork, Write

log = logging.getLogger(__name__)
T = TypeVar("T")
# Events one pass takes at most: a flood of submissions is answered in bounded batches.
MAX_EVENTS_PER_PASS = 1000


@dataclass(frozen=True)
class Deferred:
    """A handler's answer that is known only after the pass (e.g. whether a submission fits)."""

    answer: Callable[[], Any]


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
        # Free slots per agent and pool, kept as allocations and agents change (capacity.py).
        self.capacity = CapacityIndex()
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
        # What the database remembers of every agent ever joined (loaded at start).
        self.agent_records: dict[str, store.AgentRecord] = {}
        self.stats = SchedulerStats()
        self._work = PassWork()
        self._flusher = PassFlusher(db, logs)
        # Agents whose idle time may have changed in this pass (settled once, after the fit).
        self._idle_touched: set[str] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._rebuild()
        self._runner = asyncio.create_task(self._run(), name="scheduler")
        self._lag = asyncio.create_task(self.stats.watch_lag(), name="event-loop lag")

    async def stop(self) -> None:
        tasks = [self._runner, self._lag, *self._timers]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._flusher.close()

    @property
    def queue_length(self) -> int:
        """Events waiting for the next pass."""
        return self._queue.qsize()

    def post(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def call(self, event: Event) -> Any:
        """Post ``event`` and wait for its answer (raises SchedulerError on refusal)."""
        event.reply = asyncio.get_running_loop().create_future()
        self.post(event)
        return await event.reply

    async def _run(self) -> None:
        while True:
            events = [await self._queue.get()]
            while len(events) < MAX_EVENTS_PER_PASS and not self._queue.empty():
                events.append(self._queue.get_nowait())
            await self._pass(events)

    async def _pass(self, events: list[Event]) -> None:
        """Handle ``events``, fit once, store everything in one transaction, then send, call
        hooks and answer. A refused event (SchedulerError) is answered with its refusal; a
        pass whose transaction fails answers every event with that failure."""
        began = time.perf_counter()
        outcomes: list[tuple[Event, Any, BaseException | None]] = []
        for event in events:
            try:
                outcomes.append((event, await self._handle(event), None))
            except SchedulerError as exc:
                outcomes.append((event, None, exc))
            except Exception as exc:
                log.exception("scheduler failed to handle %s", type(event).__name__)
                outcomes.append((event, None, exc))
        try:
            await self._schedule()
        except Exception:
            log.exception("scheduling pass failed")
        self._settle_idle()
        held = time.perf_counter() - began
        flush_began = time.perf_counter()
        try:
            await self._flush()
        except Exception as exc:
            log.exception("could not store a scheduler pass of %d event(s)", len(events))
            outcomes = [(event, None, exc) for event, _, _ in outcomes]
        self.stats.record_pass(len(events), held, time.perf_counter() - flush_began)
        for event, result, error in outcomes:
            if event.reply is None or event.reply.done():
                continue
            if error is not None:
                event.reply.set_exception(error)
            elif isinstance(result, Deferred):
                event.reply.set_result(result.answer())
            else:
                event.reply.set_result(result)

    async def _flush(self) -> None:
        """Store the pass's work so far, then send its messages and call its hooks."""
        work, self._work = self._work, PassWork()
        if not work:
            return
        # Whoever no longer finds an allocation in memory reads its end from the database: the
        # allocations this pass ended stay visible (terminated) until their end is stored.
        for allocation in work.ended.values():
            self.allocations.setdefault(allocation.id, allocation)
        try:
            await self._flusher.store(work)
        except BaseException:
            # Submissions whose rows were not stored never happened: their submitters get the
            # failure, and nothing of them may stay (placed or queued) in memory.
            for allocation in work.submitted:
                if self.allocations.get(allocation.id) is allocation:
                    del self.allocations[allocation.id]
                    self.capacity.untrack(allocation.id)
            raise
        finally:
            for allocation_id, allocation in work.ended.items():
                if self.allocations.get(allocation_id) is allocation:
                    del self.allocations[allocation_id]
        await self._flusher.deliver(work)

    async def _read(self, fn: Callable[[Any], T]) -> T:
        """Read the database as of every write queued so far (those are stored first)."""
        await self._flush()
        return await self.db.run(fn)

    # ---- what a pass queues ------------------------------------------------------------------

    def _write(self, fn: Write) -> None:
        self._work.write(fn)

    def _log(
        self,
        task_id: str,
        allocation_id: str | None,
        text: str,
        now: datetime,
        level: str = "INFO",
    ) -> None:
        self._work.master_line(task_id, allocation_id, text, now, level)

    def _send(self, agent: ConnectedAgent, message: Any) -> None:
        self._work.send(agent.link, message, agent.id)

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
        self.agent_records = await self.db.run(store.load_agent_records)
        for allocation in await self.db.run(store.load_active):
            self.allocations[allocation.id] = allocation
            self.capacity.track(allocation)
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

    async def _submitted(self, event: AllocationSubmitted) -> Deferred:
        allocation = event.allocation
        self._work.insert(allocation, event.rows)
        self.allocations[allocation.id] = allocation
        self.capacity.track(allocation)
        self._log(
            allocation.task_id,
            allocation.id,
            f"queued: {allocation.slots} slot(s) in "
            f"resource pool '{allocation.pool}', priority {allocation.priority}",
            self.clock(),
        )
        # Answered after the pass, with the rejection reason if it can never fit.
        submitted = allocation
        return Deferred(
            lambda: submitted.kill_reason if submitted.id not in self.allocations else None
        )

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
        self._work.save(allocation)
        where = f" at {address}" if address else ""
        self._log(allocation.task_id, allocation.id, f"service ready{where}", self.clock())

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
        self._log(allocation.task_id, allocation.id, reason, self.clock())
        for agent_id in allocation.agent_slots:
            agent = self.agents.get(agent_id)
            if agent is not None and agent_id not in allocation.exited:
                self._send(agent, KillAllocation(allocation_id=allocation.id, reason=reason))

    async def _set_state(self, allocation: Allocation, state: AllocationState) -> None:
        allocation.state = state
        self._work.save(allocation)

    async def _finish(self, allocation: Allocation, exit_code: int | None, reason: str) -> None:
        """End ``allocation`` for good: record why, revoke its token, free its slots."""
        allocation.state = AllocationState.TERMINATED
        now = self.clock()
        # The reason goes into the log in the same transaction that marks the task ended,
        # so a log follower that sees the end can read why.
        level = "INFO" if exit_code == 0 else "ERROR"
        self._log(allocation.task_id, allocation.id, reason, now, level)
        self._work.finish(store.Finished(allocation, exit_code, reason, now))
        # Forgotten by the rest of the pass now; shown to readers until its end is stored.
        self.allocations.pop(allocation.id, None)
        self._work.ended[allocation.id] = allocation
        self.capacity.untrack(allocation.id)
        if len(allocation.agent_slots) > 1:
            # Ended without every part's exit (an agent was lost): stop the parts still running.
            for agent_id in allocation.agent_slots:
                agent = self.agents.get(agent_id)
                if agent is not None and agent_id not in allocation.exited:
                    self._send(agent, KillAllocation(allocation_id=allocation.id, reason=reason))
        self._work.woken.add(allocation.task_id)
        self._update_idle(allocation.agent_slots, now)
        for hook in self.exit_hooks:
            self._work.call(
                partial(hook, allocation, exit_code, reason),
                f"exit hook for allocation {allocation.id}",
            )

    def _update_idle(self, agent_ids: Iterable[str], now: datetime) -> None:
        """Note agents whose idle time may have changed; settled once per pass."""
        self._idle_touched.update(agent_ids)

    def _settle_idle(self) -> None:
        """Agents touched in this pass: idle since now if they run nothing, else busy. One look
        over the allocations per pass, not one per change."""
        if not self._idle_touched:
            return
        now = self.clock()
        for agent_id in self._idle_touched:
            agent = self.agents.get(agent_id)
            if agent is None:
                continue
            if self.capacity.busy(agent_id):
                agent.idle_since = None
            elif agent.idle_since is None:
                agent.idle_since = now
        self._idle_touched.clear()

    # ---- the pass ------------------------------------------------------------------------

    def agent_slot_counts(self, allocation_id: str) -> dict[str, int] | None:
        """How many slots each agent holds of an active allocation (empty while it is queued),
        None for one that is not active; for ``master.rendezvous``."""
        allocation = self.allocations.get(allocation_id)
        if allocation is None:
            return None
        return {agent: len(slots) for agent, slots in allocation.agent_slots.items()}

    def free_slots(self, agent: ConnectedAgent) -> list[int]:
        return self.capacity.free_slots(agent)

    def _plan(self) -> FitResult | None:
        """The pass's decision from the capacity index (None: nothing is queued)."""
        requests = self.capacity.pending()
        if not requests:
            return None
        agents = self.capacity.agent_capacities()
        return fit(requests, agents, self.capacity.running(), self._capacity(agents))

    async def _schedule(self) -> None:
        result = self._plan()
        if result is None:
            return
        for allocation_id, reason in result.unschedulable.items():
            allocation = self.allocations[allocation_id]
            allocation.kill_reason = f"rejected: {reason}"
            await self._finish(allocation, None, allocation.kill_reason)
        # fit shares one reason string among the requests waiting for the same thing; the
        # pool's status is asked once per pool, and a line is logged only when a reason changed.
        texts: dict[tuple[str, str], str] = {}
        for allocation_id, reason in result.waiting.items():
            allocation = self.allocations[allocation_id]
            text = texts.get((allocation.pool, reason))
            if text is None:
                status = self.pool_status.get(allocation.pool)
                text = (
                    reason if status is None else f"{reason}; pool '{allocation.pool}': {status()}"
                )
                texts[allocation.pool, reason] = text
            if allocation.waiting_reason != text:
                allocation.waiting_reason = text
                self._log(allocation.task_id, allocation_id, text, self.clock())
        for allocation_id in result.preemptions:
            await self._preempt(self.allocations[allocation_id])
        for allocation_id, placement in result.assignments.items():
            await self._launch(self.allocations[allocation_id], placement)
        for pool in {pool for pool, _ in texts}:
            for hook in self.demand_hooks:
                hook(pool)

    def capacities(self) -> dict[str, PoolCapacity]:
        """What each pool can ever offer, judged as the next pass would; a pool missing is not
        known yet (no agents). Read on the event loop, between events."""
        return self._capacity(self.capacity.agent_capacities())

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
        self._log(allocation.task_id, allocation.id, f"preempted: {why.reason}", self.clock())
        self._work.call(partial(hook, allocation, why), f"preempt hook for {allocation.id}")
        return True

    async def _launch(self, allocation: Allocation, placement: dict[str, tuple[int, ...]]) -> None:
        allocation.agent_slots = {agent: list(slots) for agent, slots in placement.items()}
        self.capacity.track(allocation)
        allocation.waiting_reason = None
        now = self.clock()
        self._update_idle(allocation.agent_slots, now)

        session_token = auth.new_token()
        self._write(
            partial(
                store.issue_allocation_token,
                allocation=allocation,
                lifetime=self.config.token_lifetime,
                now=now,
                token=session_token,
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
            self._log(
                allocation.task_id,
                allocation.id,
                f"assigned to agent '{agent_id}' slots {slots}",
                now,
            )
            self._send(
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
