"""The indexed ``fit`` decides exactly as the original linear-scan one did, and its cut-off.

``scheduler_fit_reference.py`` is ``fit.py`` as it was before the pool index (quadratic in the
queue, but each rule written out plainly): random clusters and queues must get identical
results — assignments, preemptions in order, rejections and waiting reasons.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from master.scheduler import fit as indexed
from master.scheduler.fit import AgentCapacity, PoolCapacity, RunningAllocation, SlotRequest
from tests.unit import scheduler_fit_reference as reference

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POOLS = ("default", "gpu", "empty")


def random_cluster(
    rng: random.Random,
) -> tuple[
    list[SlotRequest], list[AgentCapacity], list[RunningAllocation], dict[str, PoolCapacity] | None
]:
    agents = []
    for n in range(rng.randint(0, 12)):
        total = rng.choice((1, 2, 4, 8))
        free = rng.sample(range(total), rng.randint(0, total))
        agents.append(
            AgentCapacity(
                agent_id=f"agent-{rng.randint(0, 999):03d}-{n}",
                pool=rng.choice(POOLS[:2]),
                total_slots=total,
                free_slot_ids=tuple(sorted(free)),
                schedulable=rng.random() < 0.85,
                running=rng.randint(0, 3),
            )
        )
    running = [
        RunningAllocation(
            allocation_id=f"run-{n}",
            pool=rng.choice(POOLS[:2]),
            slots=rng.randint(0, 4),
            priority=rng.choice((10, 42, 50, 80)),
            group=rng.choice("abcd"),
            started_at=T0 + timedelta(seconds=rng.randint(0, 5)),
            agent_slots={},
            preemptible=rng.random() < 0.6,
        )
        for n in range(rng.randint(0, 10))
    ]
    pending = [
        SlotRequest(
            allocation_id=f"req-{n}",
            pool=rng.choice(POOLS),
            slots=rng.choice((0, 1, 1, 1, 2, 3, 4, 8, 9)),
            priority=rng.choice((10, 42, 42, 50)),
            group=rng.choice("abcd"),
            submitted_at=T0 + timedelta(seconds=rng.randint(0, 20)),
            single_agent=rng.random() < 0.7,
        )
        for n in range(rng.randint(0, 30))
    ]
    rng.shuffle(pending)
    capacity = None
    if rng.random() < 0.3:
        capacity = {"default": PoolCapacity(max_agent_slots=8, max_total_slots=rng.randint(4, 40))}
    return pending, agents, running, capacity


@pytest.mark.parametrize("seed", range(200))
def test_indexed_fit_decides_as_the_reference_does(seed: int) -> None:
    pending, agents, running, capacity = random_cluster(random.Random(seed))
    expected = reference.fit(pending, agents, running, capacity)
    got = indexed.fit(pending, agents, running, capacity)
    assert got.assignments == expected.assignments
    assert got.preemptions == expected.preemptions
    assert got.unschedulable == expected.unschedulable
    assert got.waiting == expected.waiting
