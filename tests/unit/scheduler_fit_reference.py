"""``fit`` as it was before the pool index (issue 15): the oracle of the indexed one.

Each rule is written out plainly here, at a cost quadratic in the queue (every step scans all
remaining requests and all agents); ``test_scheduler_fit_scale.py`` checks that the indexed
``master.scheduler.fit.fit`` decides exactly as this does on random clusters and queues.
"""

from __future__ import annotations

from collections import Counter

from master.scheduler.fit import (
    AgentCapacity,
    FitResult,
    PoolCapacity,
    RunningAllocation,
    SlotRequest,
    never_fits,
    static_capacity,
)


def _place(
    request: SlotRequest,
    free: dict[str, list[int]],
    agents: dict[str, AgentCapacity],
    load: Counter[str],
) -> dict[str, tuple[int, ...]] | None:
    candidates = [a for a in free if agents[a].pool == request.pool]
    if request.slots == 0:
        if not candidates:
            return None
        agent_id = min(candidates, key=lambda a: (load[a], a))
        return {agent_id: ()}
    fitting = [a for a in candidates if len(free[a]) >= request.slots]
    if fitting:
        agent_id = min(fitting, key=lambda a: (len(free[a]), a))
        return {agent_id: tuple(free[agent_id][: request.slots])}
    if request.single_agent:
        return None
    chosen: dict[str, tuple[int, ...]] = {}
    needed = request.slots
    for agent_id in sorted(candidates, key=lambda a: (-len(free[a]), a)):
        if needed == 0:
            break
        take = min(needed, len(free[agent_id]))
        if take:
            chosen[agent_id] = tuple(free[agent_id][:take])
            needed -= take
    return chosen if needed == 0 else None


def _victims(
    request: SlotRequest,
    free: dict[str, list[int]],
    agents: dict[str, AgentCapacity],
    running: list[RunningAllocation],
    already: set[str],
) -> list[str]:
    """Preemptible allocations of worse priority whose slots would let ``request`` fit.

    Counts slots pool-wide: a single-agent request may still wait after the preemption if the
    freed slots are scattered; the next pass then preempts more.
    """
    pool_free = sum(len(ids) for agent, ids in free.items() if agents[agent].pool == request.pool)
    candidates = sorted(
        (
            r
            for r in running
            if r.pool == request.pool
            and r.preemptible
            and r.priority > request.priority
            and r.allocation_id not in already
        ),
        key=lambda r: (-r.priority, -r.started_at.timestamp()),
    )
    chosen: list[str] = []
    gained = pool_free
    for victim in candidates:
        if gained >= request.slots:
            break
        chosen.append(victim.allocation_id)
        gained += victim.slots
    return chosen if gained >= request.slots and chosen else []


def fit(
    pending: list[SlotRequest],
    agents: list[AgentCapacity],
    running: list[RunningAllocation],
    capacity: dict[str, PoolCapacity] | None = None,
) -> FitResult:
    """Decide one scheduling pass. Inputs are not modified."""
    capacity = static_capacity(agents) if capacity is None else capacity
    by_id = {a.agent_id: a for a in agents}
    free = {a.agent_id: list(a.free_slot_ids) for a in agents if a.schedulable}
    load: Counter[str] = Counter({a.agent_id: a.running for a in agents})
    usage: Counter[str] = Counter()
    for allocation in running:
        usage[allocation.group] += allocation.slots
    result = FitResult()
    preempting: set[str] = set()
    remaining = list(pending)
    while remaining:
        best = min(r.priority for r in remaining)
        request = min(
            (r for r in remaining if r.priority == best),
            key=lambda r: (usage[r.group], r.submitted_at, r.allocation_id),
        )
        remaining.remove(request)
        reason = never_fits(request, capacity.get(request.pool))
        if reason:
            result.unschedulable[request.allocation_id] = reason
            continue
        placement = _place(request, free, by_id, load)
        if placement is None:
            result.waiting[request.allocation_id] = _waiting_reason(request, free, by_id)
            victims = _victims(request, free, by_id, running, preempting)
            preempting.update(victims)
            result.preemptions.extend(victims)
            continue
        for agent_id, slot_ids in placement.items():
            free[agent_id] = [s for s in free[agent_id] if s not in slot_ids]
            load[agent_id] += 1
        usage[request.group] += request.slots
        result.assignments[request.allocation_id] = placement
    return result


def _waiting_reason(
    request: SlotRequest, free: dict[str, list[int]], agents: dict[str, AgentCapacity]
) -> str:
    in_pool = [a for a in agents.values() if a.pool == request.pool]
    if not in_pool:
        return f"waiting for an agent to join resource pool '{request.pool}'"
    if not any(a.schedulable for a in in_pool):
        return f"every agent in resource pool '{request.pool}' is disabled or draining"
    most = max((len(free.get(a.agent_id, [])) for a in in_pool), default=0)
    return (
        f"waiting for {request.slots} free slots in resource pool '{request.pool}' "
        f"(at most {most} free on one agent now)"
    )
