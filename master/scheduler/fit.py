"""The scheduler's decision, as a pure function: which pending allocations go where, now.

``fit`` sees an immutable picture — pending requests, agents with their free slots, running
allocations — and returns assignments, preemption candidates, requests that can never fit, and
a reason for every request left waiting. It does no I/O and keeps no state, so every rule below
is table-tested.

Rules:

* Lower ``priority`` numbers go first (Determined's 1–99, default 42).
* Among equal priorities, fair share: the group (owner) holding the fewest slots — counting
  what this pass already gave out — goes next; ties go to the earliest submitted.
* A request that does not fit now does not block smaller ones behind it (backfill); instead, if
  preemptible allocations of worse priority hold enough slots, they are named for preemption.
* Single-agent requests (commands, shells, notebooks) take slots on one agent, best fit first to
  keep whole agents free. Multi-agent requests (trials) do the same when one agent has room now,
  and only otherwise span agents, those with the most free slots first (the fewest agents).
* Zero-slot requests run on the least busy schedulable agent of their pool.
* A request is unschedulable — rejected, not left queued forever — when its pool's capacity says
  it can never fit; a pool with no capacity information yet (no agents) keeps it waiting.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterator
from dataclasses import astuple, dataclass, field
from datetime import datetime
from heapq import heapify, heappop, heappush
from operator import attrgetter


@dataclass(frozen=True)
class SlotRequest:
    allocation_id: str
    pool: str
    slots: int
    priority: int
    group: str
    submitted_at: datetime
    single_agent: bool = True


@dataclass(frozen=True)
class AgentCapacity:
    agent_id: str
    pool: str
    total_slots: int
    free_slot_ids: tuple[int, ...]
    schedulable: bool = True
    running: int = 0


@dataclass(frozen=True)
class RunningAllocation:
    allocation_id: str
    pool: str
    slots: int
    priority: int
    group: str
    started_at: datetime
    agent_slots: dict[str, tuple[int, ...]]
    preemptible: bool = False


@dataclass(frozen=True)
class PoolCapacity:
    """The most a pool can ever offer. ``None`` means unknown (keep requests waiting)."""

    max_agent_slots: int | None
    max_total_slots: int | None


@dataclass
class FitResult:
    assignments: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    preemptions: list[str] = field(default_factory=list)
    unschedulable: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)


def static_capacity(agents: list[AgentCapacity]) -> dict[str, PoolCapacity]:
    """Capacity of pools whose size is the agents they have now (no provider)."""
    sizes: dict[str, list[int]] = {}
    for agent in agents:
        sizes.setdefault(agent.pool, []).append(agent.total_slots)
    return {
        pool: PoolCapacity(max_agent_slots=max(slots), max_total_slots=sum(slots))
        for pool, slots in sizes.items()
    }


def never_fits(request: SlotRequest, capacity: PoolCapacity | None) -> str | None:
    """Why ``request`` can never run in its pool, or None if it might."""
    if capacity is None:
        return None
    if request.single_agent and capacity.max_agent_slots is not None:
        if request.slots > capacity.max_agent_slots:
            return (
                f"requests {request.slots} slots on one agent, but the largest agent in resource "
                f"pool '{request.pool}' has {capacity.max_agent_slots}"
            )
    elif capacity.max_total_slots is not None and request.slots > capacity.max_total_slots:
        return (
            f"requests {request.slots} slots, but resource pool '{request.pool}' has "
            f"{capacity.max_total_slots} in total"
        )
    return None


class _Pool:
    """One pool's schedulable agents during a pass, indexed by free slots.

    ``buckets[n]`` holds the ids (sorted) of the agents with exactly ``n`` free slots (n ≥ 1),
    so best fit is the first non-empty bucket from ``n = slots`` up — O(slots per agent +
    log agents) — and spanning walks the buckets from the top. Free slots only shrink during a
    pass (preemptions free nothing until their tasks exit), which is what makes the cut-off
    sound: once a request of ``n`` slots found no room, no later request of ``n`` or more
    slots can find any either.
    """

    def __init__(self, name: str, capacity: PoolCapacity | None) -> None:
        self.name = name
        self.capacity = capacity
        # Requests of more slots than these never fit (``never_fits``, as thresholds).
        most, total = (None, None) if capacity is None else astuple(capacity)
        self.limit_spanning = _NEVER if total is None else total
        self.limit_single = self.limit_spanning if most is None else most
        self.agents = 0  # every agent in the pool, schedulable or not
        self.free: dict[str, list[int]] = {}  # schedulable agents only
        self.buckets: list[list[str]] = [[]]
        self.total_free = 0
        self.load: dict[str, int] = {}
        self._least_loaded: list[tuple[int, str]] | None = None  # built on first zero-slot ask
        # The cut-off: the fewest slots a single-agent / a spanning request failed to find.
        self.failed_single = _NEVER
        self.failed_spanning = _NEVER
        self.victims: list[RunningAllocation] = []
        self._victim_priority: list[int] = []  # -priority of each victim, ascending
        self._victim_slots = [0]  # prefix sums of the victims' slots
        self._next_victim = 0
        self.reasons: dict[tuple[int, int], str] = {}

    def add(self, agent: AgentCapacity) -> None:
        """Agents must be added in ascending id order (keeps each bucket sorted by append)."""
        self.agents += 1
        if not agent.schedulable:
            return
        free = list(agent.free_slot_ids)
        self.free[agent.agent_id] = free
        self.load[agent.agent_id] = agent.running
        self.total_free += len(free)
        if free:
            while len(self.buckets) <= len(free):
                self.buckets.append([])
            self.buckets[len(free)].append(agent.agent_id)

    def set_victims(self, running: list[RunningAllocation]) -> None:
        """Preemptible work, worst priority first, newest first among equals."""
        self.victims = sorted(running, key=lambda r: (-r.priority, -r.started_at.timestamp()))
        self._victim_priority = [-r.priority for r in self.victims]
        for victim in self.victims:
            self._victim_slots.append(self._victim_slots[-1] + victim.slots)

    # ---- placing ------------------------------------------------------------------------------

    def place(self, request: SlotRequest) -> dict[str, tuple[int, ...]] | None:
        """Where ``request`` goes (taking those slots), or None if it does not fit now."""
        if request.slots == 0:
            return self._place_no_slots()
        slots = request.slots
        if slots >= (self.failed_single if request.single_agent else self.failed_spanning):
            return None
        for count in range(slots, len(self.buckets)):
            if self.buckets[count]:
                agent_id = self.buckets[count][0]
                return {agent_id: self._take(agent_id, slots)}
        if request.single_agent or self.total_free < slots:
            self.failed_single = min(self.failed_single, slots)
            if not request.single_agent:
                self.failed_spanning = min(self.failed_spanning, slots)
            return None
        chosen: list[tuple[str, int]] = []
        needed = slots
        for count in range(len(self.buckets) - 1, 0, -1):
            for agent_id in self.buckets[count]:
                take = min(needed, count)
                chosen.append((agent_id, take))
                needed -= take
                if needed == 0:
                    break
            if needed == 0:
                break
        return {agent_id: self._take(agent_id, take) for agent_id, take in chosen}

    def _take(self, agent_id: str, slots: int) -> tuple[int, ...]:
        free = self.free[agent_id]
        bucket = self.buckets[len(free)]
        del bucket[bisect_left(bucket, agent_id)]
        taken, self.free[agent_id] = tuple(free[:slots]), free[slots:]
        if len(free) > slots:
            insort(self.buckets[len(free) - slots], agent_id)
        self.total_free -= slots
        self.load[agent_id] += 1
        if self._least_loaded is not None:
            heappush(self._least_loaded, (self.load[agent_id], agent_id))
        return taken

    def _place_no_slots(self) -> dict[str, tuple[int, ...]] | None:
        """Zero-slot requests: the least busy schedulable agent (lazy-deletion heap)."""
        if not self.free:
            return None
        if self._least_loaded is None:
            self._least_loaded = [(load, agent_id) for agent_id, load in self.load.items()]
            heapify(self._least_loaded)
        while self._least_loaded[0][0] != self.load[self._least_loaded[0][1]]:
            heappop(self._least_loaded)
        agent_id = self._least_loaded[0][1]
        self.load[agent_id] += 1
        heappush(self._least_loaded, (self.load[agent_id], agent_id))
        return {agent_id: ()}

    # ---- not placed -------------------------------------------------------------------------

    def take_victims(self, request: SlotRequest) -> list[RunningAllocation]:
        """Preemptible allocations of worse priority whose slots would let ``request`` fit.

        Counts slots pool-wide: a single-agent request may still wait after the preemption if
        the freed slots are scattered; the next pass then preempts more. Requests come in
        priority order, so the victims named in a pass are always a prefix of ``victims``:
        a cursor and prefix sums answer each request in O(log victims).
        """
        needed = request.slots - self.total_free
        start = self._next_victim
        if needed <= 0 or start == len(self.victims):
            return []
        end = bisect_left(self._victim_priority, -request.priority, lo=start)
        sums = self._victim_slots
        if sums[end] - sums[start] < needed:
            return []
        stop = bisect_left(sums, sums[start] + needed, lo=start + 1, hi=end + 1)
        self._next_victim = stop
        return self.victims[start:stop]

    def settled(self, priority: int) -> bool:
        """Whether nothing of ``priority`` or worse that needs slots can be placed here, or
        preempt anything, for the rest of the pass."""
        if self.total_free:
            return False
        start = self._next_victim
        return start == len(self.victims) or self._victim_priority[start] >= -priority

    def waiting_reason(self, request: SlotRequest) -> str:
        """Why ``request`` waits; one string per pool and (slots, most free on one agent), so
        thousands of waiting requests share a handful of strings."""
        most = next((n for n in range(len(self.buckets) - 1, 0, -1) if self.buckets[n]), 0)
        key = (request.slots, most)
        reason = self.reasons.get(key)
        if reason is None:
            if not self.agents:
                reason = f"waiting for an agent to join resource pool '{self.name}'"
            elif not self.free:
                reason = f"every agent in resource pool '{self.name}' is disabled or draining"
            else:
                reason = (
                    f"waiting for {request.slots} free slots in resource pool '{self.name}' "
                    f"(at most {most} free on one agent now)"
                )
            self.reasons[key] = reason
        return reason


_NEVER = 1 << 62


def fit(
    pending: list[SlotRequest],
    agents: list[AgentCapacity],
    running: list[RunningAllocation],
    capacity: dict[str, PoolCapacity] | None = None,
) -> FitResult:
    """Decide one scheduling pass. Inputs are not modified.

    Cost: O(agents log agents) to index the pools, O(running) for fair share and preemption
    candidates, then per request O(log groups + slots per agent + log agents). Once no pool
    left with pending work can place or preempt anything more (``_Pool.settled``), the rest of
    the queue is only checked for never fitting and given its pool's waiting reason.
    """
    capacity = static_capacity(agents) if capacity is None else capacity
    pools: dict[str, _Pool] = {}

    def pool_of(name: str) -> _Pool:
        pool = pools.get(name)
        if pool is None:
            pool = pools[name] = _Pool(name, capacity.get(name))
        return pool

    for agent in sorted(agents, key=attrgetter("agent_id")):
        pool_of(agent.pool).add(agent)
    usage: Counter[str] = Counter()
    preemptible: dict[str, list[RunningAllocation]] = {}
    for allocation in running:
        usage[allocation.group] += allocation.slots
        if allocation.preemptible:
            preemptible.setdefault(allocation.pool, []).append(allocation)
    for name, candidates in preemptible.items():
        pool_of(name).set_victims(candidates)

    by_priority: dict[int, list[SlotRequest]] = {}
    no_slot_pools: Counter[str] = Counter()  # zero-slot requests not yet decided, per pool
    for request in pending:
        by_priority.setdefault(request.priority, []).append(request)
        if request.slots == 0:
            no_slot_pools[request.pool] += 1
    pending_pools = [pool_of(name) for name in {r.pool: None for r in pending}]
    entered: list[int] = []  # priorities whose requests were looked at one by one
    result = FitResult()
    preempting: set[str] = set()

    def settled(priority: int) -> bool:
        return all(p.settled(priority) and not no_slot_pools[p.name] for p in pending_pools)

    def decide_in_order() -> None:
        for priority in sorted(by_priority):
            if settled(priority):
                return
            entered.append(priority)
            for request in _fair_share_order(by_priority[priority], usage):
                pool = pools[request.pool]
                if request.slots == 0:
                    no_slot_pools[request.pool] -= 1
                elif request.slots > (
                    pool.limit_single if request.single_agent else pool.limit_spanning
                ):
                    reason = never_fits(request, pool.capacity)
                    result.unschedulable[request.allocation_id] = reason or ""
                    continue
                placement = pool.place(request)
                if placement is not None:
                    usage[request.group] += request.slots
                    result.assignments[request.allocation_id] = placement
                else:
                    result.waiting[request.allocation_id] = pool.waiting_reason(request)
                    for victim in pool.take_victims(request):
                        if victim.allocation_id not in preempting:
                            preempting.add(victim.allocation_id)
                            result.preemptions.append(victim.allocation_id)
                if pool.total_free == 0 and settled(priority):
                    return

    decide_in_order()
    # Whatever is left can neither run nor preempt in this pass: it only waits (or is rejected).
    decided = result.assignments.keys() | result.unschedulable.keys() | result.waiting.keys()
    undecided = set(by_priority).difference(entered)  # levels not entered: nothing decided
    verdicts: dict[tuple[str, int, bool], tuple[dict[str, str], str]] = {}
    for priority, requests in by_priority.items():
        for request in requests:
            if priority not in undecided and request.allocation_id in decided:
                continue
            key = (request.pool, request.slots, request.single_agent)
            verdict = verdicts.get(key)
            if verdict is None:
                rejected = never_fits(request, pools[request.pool].capacity)
                verdict = verdicts[key] = (
                    (result.unschedulable, rejected)
                    if rejected
                    else (result.waiting, pools[request.pool].waiting_reason(request))
                )
            outcome, reason = verdict
            outcome[request.allocation_id] = reason
    return result


def _fair_share_order(requests: list[SlotRequest], usage: Counter[str]) -> Iterator[SlotRequest]:
    """Requests of one priority in fair-share order: next from the group holding the fewest
    slots (``usage``, updated by the caller as it places), earliest submitted first.

    Only the group just served changes its usage, so a heap of each group's next request
    keyed by (usage, arrival rank) gives the order in O(log groups) per request; ranks (one
    sort by submission time, then id) keep the heap's comparisons to integers."""
    ordered = sorted(requests, key=_ARRIVAL)
    groups: dict[str, list[int]] = {}
    for rank, request in enumerate(ordered):
        groups.setdefault(request.group, []).append(rank)
    heap = [(usage[group], ranks[0], group, 0) for group, ranks in groups.items()]
    heapify(heap)
    while heap:
        _, rank, group, position = heappop(heap)
        yield ordered[rank]
        ranks = groups[group]
        position += 1
        if position < len(ranks):
            heappush(heap, (usage[group], ranks[position], group, position))


_ARRIVAL = attrgetter("submitted_at", "allocation_id")
