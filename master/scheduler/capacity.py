"""Incremental bookkeeping of who holds which slot, so a pass costs what changed.

``CapacityIndex`` keeps, per agent, the slots its allocations hold and the ``AgentCapacity``
``fit`` reads; per allocation, the ``SlotRequest`` (while queued) or ``RunningAllocation``
(once placed) that stands for it in a pass; per pool, the free slots of its schedulable
agents. Each change costs the slots of the agents it touches, never a scan over every
allocation; a pass copies the cached values (``agent_capacities``, ``pending``, ``running``).

It promises to equal the from-scratch computation of ``snapshot.py`` (the oracle, which a
property test replays random operations against), provided the scheduler tells it every change,
on its loop, after making it:

* ``track(allocation)`` when an allocation arrives, is placed, goes back to the queue, or its
  start time changes; ``untrack(allocation_id)`` when it ends;
* ``agent_joined(agent)`` / ``agent_left(agent_id)``;
* ``agent_changed(agent)`` after an agent's enabled, draining or notice flags or its disabled
  slots change.

It assumes an allocation is queued exactly while it holds no agent (``agent_slots`` empty, as
``Scheduler`` keeps it: placing sets it, requeueing clears it), and that it holds slots on
agents whether or not they are connected (an allocation waiting for its lost agent keeps that
agent's slots, which count again when the agent comes back).
"""

from __future__ import annotations

from collections import Counter

from master.scheduler.fit import AgentCapacity, RunningAllocation, SlotRequest
from master.scheduler.state import Allocation, ConnectedAgent


class CapacityIndex:
    def __init__(self) -> None:
        self._agents: dict[str, ConnectedAgent] = {}
        self._capacities: dict[str, AgentCapacity] = {}
        # Slot id -> how many tracked allocations hold it, per agent id (connected or not).
        self._used: dict[str, Counter[int]] = {}
        # Allocation ids placed on each agent id, and what each placed allocation holds.
        self._on_agent: dict[str, set[str]] = {}
        self._held: dict[str, dict[str, tuple[int, ...]]] = {}
        self._pending: dict[str, SlotRequest] = {}
        self._running: dict[str, RunningAllocation] = {}
        self._pool_free: Counter[str] = Counter()

    # ---- changes --------------------------------------------------------------------------

    def agent_joined(self, agent: ConnectedAgent) -> None:
        """``agent`` is connected (replacing any earlier entry of the same id)."""
        self.agent_left(agent.id)
        self._agents[agent.id] = agent
        self._refresh(agent.id)

    def agent_left(self, agent_id: str) -> None:
        """The agent is gone; what its allocations hold stays counted against its id."""
        self._agents.pop(agent_id, None)
        old = self._capacities.pop(agent_id, None)
        if old is not None and old.schedulable:
            self._pool_free[old.pool] -= len(old.free_slot_ids)

    def agent_changed(self, agent: ConnectedAgent) -> None:
        """Its flags or disabled slots changed; an agent not connected is ignored."""
        if self._agents.get(agent.id) is agent:
            self._refresh(agent.id)

    def track(self, allocation: Allocation) -> None:
        """Record ``allocation`` as it is now: queued, or holding ``agent_slots``."""
        self._release(allocation.id)
        if not allocation.agent_slots:
            self._pending[allocation.id] = SlotRequest(
                allocation_id=allocation.id,
                pool=allocation.pool,
                slots=allocation.slots,
                priority=allocation.priority,
                group=allocation.owner,
                submitted_at=allocation.submitted_at,
                single_agent=allocation.single_agent,
            )
            return
        held = {agent_id: tuple(slots) for agent_id, slots in allocation.agent_slots.items()}
        self._held[allocation.id] = held
        self._running[allocation.id] = RunningAllocation(
            allocation_id=allocation.id,
            pool=allocation.pool,
            slots=allocation.slots,
            priority=allocation.priority,
            group=allocation.owner,
            started_at=allocation.started_at or allocation.submitted_at,
            agent_slots=held,
            preemptible=allocation.preemptible,
        )
        for agent_id, slots in held.items():
            self._used.setdefault(agent_id, Counter()).update(slots)
            self._on_agent.setdefault(agent_id, set()).add(allocation.id)
            self._refresh(agent_id)

    def untrack(self, allocation_id: str) -> None:
        """The allocation ended: its slots are free."""
        self._release(allocation_id)

    def _release(self, allocation_id: str) -> None:
        self._pending.pop(allocation_id, None)
        self._running.pop(allocation_id, None)
        held = self._held.pop(allocation_id, None)
        if held is None:
            return
        for agent_id, slots in held.items():
            used = self._used[agent_id]
            used.subtract(slots)
            for slot in slots:
                if used[slot] <= 0:
                    del used[slot]
            on_agent = self._on_agent[agent_id]
            on_agent.discard(allocation_id)
            if not on_agent:
                del self._on_agent[agent_id], self._used[agent_id]
            self._refresh(agent_id)

    def _refresh(self, agent_id: str) -> None:
        """Rebuild one connected agent's capacity: O(its slots)."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return
        old = self._capacities.get(agent_id)
        if old is not None and old.schedulable:
            self._pool_free[old.pool] -= len(old.free_slot_ids)
        used = self._used.get(agent_id, ())
        capacity = AgentCapacity(
            agent_id=agent.id,
            pool=agent.pool,
            total_slots=len(agent.slots),
            free_slot_ids=tuple(
                slot.id
                for slot in agent.slots
                if slot.id not in used and slot.id not in agent.disabled_slots
            ),
            schedulable=agent.enabled and not agent.draining and not agent.interrupting,
            running=len(self._on_agent.get(agent_id, ())),
        )
        self._capacities[agent_id] = capacity
        if capacity.schedulable:
            self._pool_free[capacity.pool] += len(capacity.free_slot_ids)

    # ---- reads ----------------------------------------------------------------------------

    def agent_capacities(self) -> list[AgentCapacity]:
        """What ``snapshot.agent_capacities`` computes, for every connected agent."""
        return list(self._capacities.values())

    def pending(self) -> list[SlotRequest]:
        """What ``snapshot.slot_requests`` computes: the queued allocations."""
        return list(self._pending.values())

    def running(self) -> list[RunningAllocation]:
        """What ``snapshot.running_allocations`` computes: the placed allocations."""
        return list(self._running.values())

    def free_slots(self, agent: ConnectedAgent) -> list[int]:
        """Slots of ``agent`` no allocation holds (disabled ones included), in slot order."""
        used = self._used.get(agent.id, ())
        return [slot.id for slot in agent.slots if slot.id not in used]

    def busy(self, agent_id: str) -> bool:
        """Whether any allocation holds (or waits to re-attach to) this agent."""
        return agent_id in self._on_agent

    def placed_on(self, agent_id: str) -> frozenset[str]:
        """Ids of the allocations placed on this agent."""
        return frozenset(self._on_agent.get(agent_id, ()))

    def pool_free_slots(self, pool: str) -> int:
        """Free, enabled slots on the pool's schedulable agents."""
        return self._pool_free[pool]
