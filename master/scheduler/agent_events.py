"""The scheduler's handling of agents: joining, leaving, coming back, reporting, draining.

A base class of ``Scheduler`` (see ``loop.py``), split out to keep each file readable; its
methods run on the scheduler's loop like every other handler.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from agent.protocol import (
    PROTOCOL_VERSION,
    AgentOptions,
    AllocationExited,
    AllocationStarted,
    InterruptionNotice,
    KillAllocation,
    NoticeKind,
    Reject,
    Welcome,
)
from master.scheduler import store
from master.scheduler.state import (
    AgentConnected,
    AgentDisconnected,
    AgentInterrupted,
    AgentNotice,
    AgentReport,
    Allocation,
    AllocationState,
    ConnectedAgent,
    LostAgent,
    NoticeHook,
    Preemption,
    ReconnectDeadline,
    SchedulerError,
    SetAgentState,
    SetSlotState,
    link_peer_host,
)
from provisioner.config import ProviderConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from master.config import MasterConfig
    from master.db import Database
    from master.logs import LogStore
    from master.scheduler.capacity import CapacityIndex
    from master.scheduler.state import Event
    from master.scheduler.work import PassWork, Write

log = logging.getLogger(__name__)


class AgentEvents:
    """Agent event handlers; the state and task operations they use are the Scheduler's."""

    if TYPE_CHECKING:
        config: MasterConfig
        db: Database
        logs: LogStore
        clock: Callable[[], datetime]
        agents: dict[str, ConnectedAgent]
        allocations: dict[str, Allocation]
        lost: dict[str, LostAgent]
        slots_disabled: dict[str, set[int]]
        capacity: CapacityIndex
        notice_hooks: list[NoticeHook]
        agent_records: dict[str, store.AgentRecord]
        _timers: set[asyncio.Task[None]]
        _work: PassWork

        def post(self, event: Event) -> None: ...

        def _write(self, fn: Write) -> None: ...

        def _log(
            self,
            task_id: str,
            allocation_id: str | None,
            text: str,
            now: datetime,
            level: str = "INFO",
        ) -> None: ...

        def _send(self, agent: ConnectedAgent, message: Any) -> None: ...

        async def _finish(
            self, allocation: Allocation, exit_code: int | None, reason: str
        ) -> None: ...

        async def _kill(self, allocation: Allocation, reason: str) -> None: ...

        async def _set_state(self, allocation: Allocation, state: AllocationState) -> None: ...

        async def _preempt(self, allocation: Allocation, why: Preemption = ...) -> bool: ...

        def _update_idle(self, agent_ids: Iterable[str], now: datetime) -> None: ...

    async def _agent_connected(self, event: AgentConnected) -> Welcome | Reject:
        """Answer a hello on the agent's link — queued ahead of any work this pass sends it —
        and return the answer."""
        answer = await self._admit(event)
        self._work.send(event.link, answer, event.hello.agent_id)
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

        row = self.agent_records.get(hello.agent_id)
        if row is None:
            row = self.agent_records[hello.agent_id] = store.AgentRecord(registered_at=now)
        self._write(partial(store.agent_joined, hello=hello, now=now))
        self.agents[hello.agent_id] = agent = ConnectedAgent(
            id=hello.agent_id,
            pool=hello.resource_pool,
            slots=list(hello.slots),
            link=event.link,
            version=hello.version,
            addresses=list(hello.addresses),
            isolation=hello.isolation,
            registered_at=row.registered_at,
            connected_at=now,
            enabled=row.enabled,
            draining=row.draining,
            idle_since=now,
            peer_host=link_peer_host(event.link),
            disabled_slots=set(self.slots_disabled.get(hello.agent_id, ())),
        )
        self.capacity.agent_joined(agent)
        self.lost.pop(hello.agent_id, None)
        still_running = {r.allocation_id for r in hello.running}
        exit_queued = set(hello.exited)
        reattach = []
        for allocation in list(self.allocations.values()):
            if hello.agent_id not in allocation.agent_slots:
                continue
            if allocation.id in still_running:
                reattach.append(allocation.id)
                self._log(
                    allocation.task_id,
                    allocation.id,
                    f"re-attached to agent '{hello.agent_id}'",
                    now,
                )
            elif allocation.id in exit_queued:
                # It ended while we were away; its logs and exit follow from the agent's outbox.
                self._log(
                    allocation.task_id,
                    allocation.id,
                    f"re-attached to agent '{hello.agent_id}', where it ended while the master "
                    "was unreachable",
                    now,
                )
            elif allocation.state != AllocationState.QUEUED:
                await self._agent_lost_allocation(allocation, _gone_reason(event))
        log.info(
            "agent %s joined pool %s with %d slots",
            hello.agent_id,
            hello.resource_pool,
            len(hello.slots),
        )
        return Welcome(options=self._agent_options(), reattach=reattach, last_seq=event.last_seq)

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
        self.capacity.agent_left(event.agent_id)
        now = self.clock()
        self._write(partial(store.agent_left, agent_id=event.agent_id, now=now))
        # An agent that shut down on purpose, or that was drained or disabled first (what the
        # autoscaler does to an idle agent before stopping it), is news, not a problem.
        expected = event.shut_down or agent.draining or not agent.enabled
        log.log(
            logging.INFO if expected else logging.WARNING,
            "agent %s disconnected: %s",
            event.agent_id,
            event.reason,
        )
        affected = [a for a in self.allocations.values() if event.agent_id in a.agent_slots]
        notice = agent.notice
        if notice is not None and notice.kind is NoticeKind.INTERRUPTION:
            # Its instance was reclaimed: nothing comes back to wait for.
            for allocation in affected:
                await self._agent_lost_allocation(
                    allocation,
                    f"agent '{event.agent_id}' is gone: its instance was reclaimed by "
                    f"{notice.cloud.upper()} ({event.reason})",
                )
            return
        self.lost[event.agent_id] = LostAgent(pool=agent.pool, slots=len(agent.slots), since=now)
        self._start_timer(event.agent_id, now)
        wait = self.config.agent_reconnect_wait.total_seconds()
        for allocation in affected:
            self._log(
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

    async def _agent_interrupted(self, event: AgentInterrupted) -> None:
        """End everything on an agent whose instance the cloud took back, at once (no wait for
        a reconnect that cannot come), marked as interrupted; stop sending it work."""
        self.lost.pop(event.agent_id, None)
        agent = self.agents.get(event.agent_id)
        if agent is not None:
            agent.enabled, agent.draining = False, True
            self.capacity.agent_changed(agent)
        for allocation in list(self.allocations.values()):
            if event.agent_id not in allocation.agent_slots:
                continue
            allocation.interrupted = True
            await self._agent_lost_allocation(
                allocation, f"agent '{event.agent_id}': its instance was {event.reason}"
            )
            if allocation.state == AllocationState.QUEUED:  # it had not started: nothing ended
                allocation.interrupted = False
            if agent is not None and allocation.state == AllocationState.TERMINATED:
                # The machine is going anyway: a failed send is only logged.
                self._send(agent, KillAllocation(allocation_id=allocation.id, reason=event.reason))

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
        self.capacity.track(allocation)
        allocation.service_ready, allocation.proxy_address = False, None
        self._work.save(allocation)
        self._write(partial(store.revoke_tokens, allocation_id=allocation.id))
        self._log(
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
            self.capacity.track(allocation)
            if allocation.state == AllocationState.STARTING:
                await self._set_state(allocation, AllocationState.RUNNING)
            self._log(
                allocation.task_id,
                allocation.id,
                f"running on agent '{event.agent_id}' (pid {message.pid})",
                self.clock(),
            )
            return
        await self._exited(allocation, event.agent_id, message)

    async def _exited(
        self, allocation: Allocation, agent_id: str, message: AllocationExited
    ) -> None:
        """One agent's part ended. The allocation ends once every part has: a part that exits
        early with success waits for the others (they may still be reporting); one that fails
        gets the others killed, since their peer is gone."""
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
        allocation.exited[agent_id] = code
        if allocation.outcome is None or (code != 0 and allocation.outcome[0] == 0):
            allocation.outcome = (code, reason)
        remaining = sorted(a for a in allocation.agent_slots if a not in allocation.exited)
        if not remaining:
            await self._finish(allocation, *allocation.outcome)
            return
        self._log(
            allocation.task_id,
            allocation.id,
            f"its part on agent '{agent_id}' {reason}; waiting for agent(s) {', '.join(remaining)}",
            self.clock(),
        )
        if code != 0 and allocation.kill_reason is None:
            await self._kill(allocation, f"killed: its part on agent '{agent_id}' failed")

    async def _agent_notice(self, event: AgentNotice) -> None:
        """A spot interruption notice or rebalance recommendation from an agent's instance.

        An interruption: nothing new is placed on the agent, every preemptible task there is
        preempted with the notice's deadline (trials checkpoint, exit and are queued again),
        every other task gets a line saying when its instance goes. A rebalance recommendation
        follows the pool's ``rebalance`` policy: ignore; replace (nothing new placed there, a
        replacement launched); migrate (replace, and trials are asked to checkpoint and move).
        Either way the notice hooks (the provisioner) hear about it in this same event."""
        agent = self.agents.get(event.agent_id)
        if agent is None or (event.link is not None and agent.link is not event.link):
            return
        notice = event.notice
        if agent.notice is not None and (
            agent.notice.kind is NoticeKind.INTERRUPTION or notice.kind is NoticeKind.REBALANCE
        ):
            return  # heard already (from the agent and the cluster-side signal, say)
        interruption = notice.kind is NoticeKind.INTERRUPTION
        policy = self._rebalance_policy(agent.pool)
        log.warning(
            "agent %s: %s%s",
            agent.id,
            describe_notice(agent.id, notice),
            "" if interruption else f" (pool policy rebalance: {policy})",
        )
        if not interruption and policy == "ignore":
            for hook in self.notice_hooks:
                hook(agent.pool, agent, notice)
            return
        agent.notice = notice
        self.capacity.agent_changed(agent)
        for allocation in list(self.allocations.values()):
            if agent.id not in allocation.agent_slots:
                continue
            if interruption:
                allocation.interrupted = True
                why = Preemption(describe_notice(agent.id, notice), notice.deadline)
                line = f"{why.reason}: this task will be stopped then"
            else:
                why = Preemption(describe_notice(agent.id, notice))
                line = f"{why.reason}: nothing new is placed there"
            moving = interruption or policy == "migrate"
            if not (moving and allocation.preemptible and await self._preempt(allocation, why)):
                self._log(allocation.task_id, allocation.id, line, self.clock(), "WARNING")
        for hook in self.notice_hooks:
            hook(agent.pool, agent, notice)

    def _rebalance_policy(self, pool: str) -> str:
        """The pool's ``rebalance`` policy; a pool without a provider gets the default."""
        for config in self.config.resource_pools:
            if config.pool_name == pool and config.provider is not None:
                return config.provider.rebalance.value
        return str(ProviderConfig.model_fields["rebalance"].default.value)

    async def _set_agent_state(self, event: SetAgentState) -> ConnectedAgent:
        agent = self.agents.get(event.agent_id)
        if agent is None:
            raise SchedulerError(404, f"agent '{event.agent_id}' not found (or not connected)")
        agent.enabled = event.enabled
        agent.draining = (not event.enabled) and event.drain
        self.capacity.agent_changed(agent)

        record = self.agent_records.get(agent.id)
        if record is not None:
            record.enabled, record.draining = agent.enabled, agent.draining
        self._write(
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

    async def _set_slot_state(self, event: SetSlotState) -> ConnectedAgent:
        agent = self.agents.get(event.agent_id)
        if agent is None:
            raise SchedulerError(404, f"agent '{event.agent_id}' not found (or not connected)")
        ids = [s.id for s in agent.slots]
        if event.slot_id not in ids:
            raise SchedulerError(
                404, f"agent '{agent.id}' has no slot {event.slot_id} (its slots: {ids})"
            )
        if event.enabled:
            agent.disabled_slots.discard(event.slot_id)
        else:
            agent.disabled_slots.add(event.slot_id)
        self.slots_disabled[agent.id] = set(agent.disabled_slots)
        self.capacity.agent_changed(agent)
        if not event.enabled and not event.drain:
            for allocation in list(self.allocations.values()):
                if event.slot_id in allocation.agent_slots.get(agent.id, ()):
                    reason = f"killed: slot {event.slot_id} of agent '{agent.id}' was disabled"
                    await self._kill(allocation, reason)
        return agent


def _gone_reason(event: AgentConnected) -> str:
    """Why an allocation an agent no longer mentions in its hello has ended."""
    hello = event.hello
    if event.restarted and hello.booted_at is not None:
        at = hello.booted_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"agent '{hello.agent_id}' restarted (a new agent process started at {at} UTC): "
            "this task's process ended with the previous one"
        )
    return (
        f"agent '{hello.agent_id}' reconnected but no longer runs this task (not among the "
        "allocations it runs or has an exit queued for)"
    )


def describe_notice(agent_id: str, notice: InterruptionNotice) -> str:
    """``spot interruption notice for i-…, deadline 12:04:10`` (UTC), or the rebalance twin."""
    if notice.kind is NoticeKind.INTERRUPTION and notice.deadline is not None:
        at = notice.deadline.astimezone(UTC).strftime("%H:%M:%S")
        return (
            f"spot interruption notice for {agent_id}, deadline {at} UTC: "
            f"{notice.cloud.upper()} reclaims the instance ({notice.detail})"
        )
    return f"rebalance recommendation for {agent_id}: {notice.cloud.upper()} says it is at risk"
