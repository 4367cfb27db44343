"""Turning the scheduler's live state into ``fit``'s immutable inputs."""

from __future__ import annotations

from collections.abc import Iterable

from master.scheduler.fit import AgentCapacity, RunningAllocation, SlotRequest
from master.scheduler.state import Allocation, AllocationState, ConnectedAgent


def free_slots(agent: ConnectedAgent, allocations: Iterable[Allocation]) -> list[int]:
    used = {slot for a in allocations for slot in a.agent_slots.get(agent.id, ())}
    return [slot.id for slot in agent.slots if slot.id not in used]


def agent_capacities(
    agents: Iterable[ConnectedAgent], allocations: list[Allocation]
) -> list[AgentCapacity]:
    return [
        AgentCapacity(
            agent_id=agent.id,
            pool=agent.pool,
            total_slots=len(agent.slots),
            free_slot_ids=tuple(
                s for s in free_slots(agent, allocations) if s not in agent.disabled_slots
            ),
            schedulable=agent.enabled and not agent.draining and not agent.interrupting,
            running=sum(1 for a in allocations if agent.id in a.agent_slots),
        )
        for agent in agents
    ]


def running_allocations(allocations: list[Allocation]) -> list[RunningAllocation]:
    return [
        RunningAllocation(
            allocation_id=a.id,
            pool=a.pool,
            slots=a.slots,
            priority=a.priority,
            group=a.owner,
            started_at=a.started_at or a.submitted_at,
            agent_slots={k: tuple(v) for k, v in a.agent_slots.items()},
            preemptible=a.preemptible,
        )
        for a in allocations
        if a.state != AllocationState.QUEUED
    ]


def slot_requests(allocations: list[Allocation]) -> list[SlotRequest]:
    return [
        SlotRequest(
            allocation_id=a.id,
            pool=a.pool,
            slots=a.slots,
            priority=a.priority,
            group=a.owner,
            submitted_at=a.submitted_at,
            single_agent=a.single_agent,
        )
        for a in allocations
        if a.state == AllocationState.QUEUED
    ]
