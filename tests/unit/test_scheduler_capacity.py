"""The incremental capacity index always equals the from-scratch snapshot (the oracle).

Random sequences of what the scheduler does — agents joining, leaving and coming back, slots
disabled and enabled, agents disabled, drained or noticed, allocations submitted, placed
(on one agent or spread), started, requeued and ended — each followed by the call the
scheduler makes to the index; after every step the index's answers must equal
``master/scheduler/snapshot.py`` computed over everything.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.protocol import DeviceType, InterruptionNotice, NoticeKind, SlotInfo
from master.scheduler import snapshot
from master.scheduler.capacity import CapacityIndex
from master.scheduler.fit import AgentCapacity
from master.scheduler.state import Allocation, AllocationState, ConnectedAgent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POOLS = ("default", "gpu")


class _NoLink:
    async def send(self, message: object) -> None:
        raise ConnectionError("no link in this test")

    async def close(self, reason: str) -> None:
        return None


class Cluster:
    """The scheduler's state and its index, changed the way the scheduler changes them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.agents: dict[str, ConnectedAgent] = {}
        self.allocations: dict[str, Allocation] = {}
        self.slots_disabled: dict[str, set[int]] = {}
        self.index = CapacityIndex()
        self.serial = 0

    def join(self) -> None:
        agent_id = f"agent-{self.rng.randint(0, 7)}"
        slots = self.rng.choice((0, 1, 2, 4, 8))
        agent = ConnectedAgent(
            id=agent_id,
            pool=self.rng.choice(POOLS),
            slots=[SlotInfo(id=n, type=DeviceType.CUDA) for n in range(slots)],
            link=_NoLink(),
            version="test",
            addresses=[],
            registered_at=T0,
            connected_at=T0,
            enabled=self.rng.random() < 0.9,
            disabled_slots=set(self.slots_disabled.get(agent_id, ())),
        )
        self.agents[agent_id] = agent
        self.index.agent_joined(agent)

    def leave(self) -> None:
        if self.agents:
            agent_id = self.rng.choice(sorted(self.agents))
            del self.agents[agent_id]
            self.index.agent_left(agent_id)

    def flag(self) -> None:
        if not self.agents:
            return
        agent = self.agents[self.rng.choice(sorted(self.agents))]
        what = self.rng.randrange(4)
        if what == 0:
            agent.enabled = not agent.enabled
        elif what == 1:
            agent.draining = not agent.draining
        elif what == 2:
            agent.notice = None if agent.notice else notice()
        elif agent.slots:
            slot = self.rng.choice(agent.slots).id
            agent.disabled_slots ^= {slot}
            self.slots_disabled[agent.id] = set(agent.disabled_slots)
        self.index.agent_changed(agent)

    def submit(self) -> None:
        self.serial += 1
        allocation = Allocation(
            id=f"alloc-{self.serial}",
            task_id=f"task-{self.serial}",
            task_type="COMMAND",
            owner=self.rng.choice("ab"),
            pool=self.rng.choice(POOLS),
            slots=self.rng.randint(0, 3),
            priority=self.rng.choice((10, 42)),
            submitted_at=T0 + timedelta(seconds=self.serial),
            argv=["true"],
            env={},
            preemptible=self.rng.random() < 0.5,
        )
        self.allocations[allocation.id] = allocation
        self.index.track(allocation)

    def place(self) -> None:
        queued = [a for a in self.allocations.values() if not a.agent_slots]
        if not queued or not self.agents:
            return
        allocation = self.rng.choice(queued)
        chosen = self.rng.sample(sorted(self.agents), min(len(self.agents), self.rng.randint(1, 2)))
        placement = {}
        for agent_id in chosen:
            free = snapshot.free_slots(self.agents[agent_id], self.allocations.values())
            placement[agent_id] = self.rng.sample(free, min(len(free), self.rng.randint(0, 2)))
        allocation.agent_slots = placement
        allocation.state = AllocationState.STARTING
        self.index.track(allocation)

    def start(self) -> None:
        placed = [a for a in self.allocations.values() if a.agent_slots]
        if placed:
            allocation = self.rng.choice(placed)
            allocation.started_at = T0 + timedelta(hours=1, seconds=self.rng.randint(0, 9))
            allocation.state = AllocationState.RUNNING
            self.index.track(allocation)

    def requeue(self) -> None:
        placed = [a for a in self.allocations.values() if a.agent_slots]
        if placed:
            allocation = self.rng.choice(placed)
            allocation.agent_slots = {}
            allocation.state = AllocationState.QUEUED
            self.index.track(allocation)

    def finish(self) -> None:
        if self.allocations:
            allocation_id = self.rng.choice(sorted(self.allocations))
            self.allocations.pop(allocation_id)
            self.index.untrack(allocation_id)

    def check(self) -> None:
        allocations = list(self.allocations.values())
        oracle = snapshot.agent_capacities(self.agents.values(), allocations)
        assert by_id(self.index.agent_capacities()) == by_id(oracle)
        assert sorted_by_id(self.index.pending()) == sorted_by_id(
            snapshot.slot_requests(allocations)
        )
        assert sorted_by_id(self.index.running()) == sorted_by_id(
            snapshot.running_allocations(allocations)
        )
        for agent in self.agents.values():
            assert self.index.free_slots(agent) == snapshot.free_slots(agent, allocations)
        for agent_id in {f"agent-{n}" for n in range(8)}:
            assert self.index.busy(agent_id) == any(agent_id in a.agent_slots for a in allocations)
            assert self.index.placed_on(agent_id) == {
                a.id for a in allocations if agent_id in a.agent_slots
            }
        for pool in POOLS:
            assert self.index.pool_free_slots(pool) == sum(
                len(c.free_slot_ids) for c in oracle if c.pool == pool and c.schedulable
            )


def notice() -> InterruptionNotice:
    return InterruptionNotice(
        kind=NoticeKind.INTERRUPTION, cloud="aws", deadline=T0, noticed_at=T0, detail="test"
    )


def by_id(capacities: list[AgentCapacity]) -> dict[str, AgentCapacity]:
    return {c.agent_id: c for c in capacities}


def sorted_by_id(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda item: item.allocation_id)


@pytest.mark.parametrize("seed", range(40))
def test_the_index_equals_the_snapshot_after_any_sequence_of_changes(seed: int) -> None:
    rng = random.Random(seed)
    cluster = Cluster(rng)
    steps = [
        cluster.join,
        cluster.leave,
        cluster.flag,
        cluster.submit,
        cluster.submit,
        cluster.place,
        cluster.place,
        cluster.start,
        cluster.requeue,
        cluster.finish,
    ]
    for _ in range(150):
        rng.choice(steps)()
        cluster.check()


def test_an_allocation_keeps_its_slots_while_its_agent_is_away() -> None:
    """A lost agent's allocations wait for it; when it re-joins, those slots are not free."""
    cluster = Cluster(random.Random(0))
    cluster.join()
    agent = next(iter(cluster.agents.values()))
    agent.slots = [SlotInfo(id=n, type=DeviceType.CUDA) for n in range(2)]
    agent.enabled = True
    cluster.index.agent_joined(agent)
    cluster.submit()
    allocation = next(iter(cluster.allocations.values()))
    allocation.agent_slots = {agent.id: [1]}
    allocation.state = AllocationState.STARTING
    cluster.index.track(allocation)
    cluster.index.agent_left(agent.id)
    assert cluster.index.busy(agent.id)
    cluster.index.agent_joined(agent)
    (capacity,) = cluster.index.agent_capacities()
    assert capacity.free_slot_ids == (0,) and capacity.running == 1
    cluster.check()
