"""How long one scheduling pass takes at scale: ``python -m bench.scheduler_pass [--only NAME]``.

Builds the scheduler's live state synthetically — ``ConnectedAgent`` and ``Allocation`` objects
of ``master/scheduler/state.py`` in a real ``Scheduler`` (no database, no agents: nothing here
does I/O) — and times the part of ``Scheduler._schedule`` that decides: turning the state into
``fit``'s inputs (``agent_capacities``, the running allocations, the pending requests, pool
capacity) and ``fit`` itself. Where the scheduler has ``_plan`` (the incremental capacity index)
that is what is timed; on older code the same lines ``_schedule`` ran then are replayed, so the
same command measures "before" in a worktree of ``main``.

Every pass sees the same state (a pass's assignments are not applied), so the figures are the
cost of one decision in that state. Scenarios (issue 15): 500 busy one-slot agents with 1,000,
3,000 and 9,500 queued one-slot commands; 2,000 eight-slot agents with 2,000 and 10,000 live
allocations; and the target, 10,000 queued on 2,000 eight-slot agents (full, with 1,000 free
slots, and empty: every request placed in one pass), p99 ≤ 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from agent.protocol import DeviceType, SlotInfo
from master.config import MasterConfig
from master.scheduler import snapshot
from master.scheduler.fit import FitResult, fit
from master.scheduler.loop import Scheduler
from master.scheduler.state import Allocation, AllocationState, ConnectedAgent

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
OWNERS = 16
PRIORITIES = (30, 42, 42, 42, 50)  # mostly the default, some above and below


@dataclass(frozen=True)
class Scenario:
    name: str
    agents: int
    slots_per_agent: int
    live: int  # one-slot allocations running, packed onto the agents in order
    queued: int  # one-slot commands waiting


SCENARIOS = [
    Scenario("busy500-q1000", 500, 1, 500, 1_000),
    Scenario("busy500-q3000", 500, 1, 500, 3_000),
    Scenario("busy500-q9500", 500, 1, 500, 9_500),
    Scenario("a2000x8-live2000", 2_000, 8, 2_000, 10),
    Scenario("a2000x8-live10000", 2_000, 8, 10_000, 10),
    Scenario("a2000x8-full-q10000", 2_000, 8, 16_000, 10_000),
    Scenario("a2000x8-free1000-q10000", 2_000, 8, 15_000, 10_000),
    Scenario("a2000x8-empty-q10000", 2_000, 8, 0, 10_000),
]


class _NoLink:
    async def send(self, message: Any) -> None:  # pragma: no cover - never called
        raise ConnectionError("benchmark agents have no link")

    async def close(self, reason: str) -> None:  # pragma: no cover
        return None


def build(scenario: Scenario) -> Scheduler:
    scheduler = Scheduler(MasterConfig(), db=None, logs=None, clock=lambda: NOW)  # type: ignore[arg-type]
    scheduler.started_at = NOW - timedelta(hours=1)
    link = _NoLink()
    slots = [SlotInfo(id=n, type=DeviceType.CUDA) for n in range(scenario.slots_per_agent)]
    for n in range(scenario.agents):
        agent = ConnectedAgent(
            id=f"agent-{n:05d}",
            pool="default",
            slots=list(slots),
            link=link,
            version="bench",
            addresses=[],
            registered_at=NOW,
            connected_at=NOW,
        )
        scheduler.agents[agent.id] = agent
    agent_ids = list(scheduler.agents)
    for n in range(scenario.live):
        agent_id = agent_ids[n // scenario.slots_per_agent]
        slot = n % scenario.slots_per_agent
        scheduler.allocations[f"live-{n}"] = allocation(
            f"live-{n}", n, AllocationState.RUNNING, {agent_id: [slot]}
        )
    for n in range(scenario.queued):
        scheduler.allocations[f"queued-{n}"] = allocation(
            f"queued-{n}", scenario.live + n, AllocationState.QUEUED, {}
        )
    index = getattr(scheduler, "capacity", None)
    if index is not None:  # the incremental index, fed as the scheduler's handlers feed it
        for agent in scheduler.agents.values():
            index.agent_joined(agent)
        for item in scheduler.allocations.values():
            index.track(item)
    return scheduler


def allocation(
    allocation_id: str, n: int, state: AllocationState, agent_slots: dict[str, list[int]]
) -> Allocation:
    submitted = NOW - timedelta(seconds=100_000 - n * 0.01)
    return Allocation(
        id=allocation_id,
        task_id=f"task-{allocation_id}",
        task_type="COMMAND",
        owner=f"user-{n % OWNERS}",
        pool="default",
        slots=1,
        priority=PRIORITIES[n % len(PRIORITIES)],
        submitted_at=submitted,
        argv=["true"],
        env={},
        state=state,
        agent_slots=agent_slots,
        started_at=submitted if agent_slots else None,
    )


def replayed_pass(scheduler: Scheduler) -> FitResult:
    """``Scheduler._schedule``'s decision as main ran it (before ``_plan`` existed)."""
    allocations = list(scheduler.allocations.values())
    requests = snapshot.slot_requests(allocations)
    agents = snapshot.agent_capacities(scheduler.agents.values(), allocations)
    running = snapshot.running_allocations(allocations)
    return fit(requests, agents, running, scheduler._capacity(agents))


def capacities_call(scheduler: Scheduler) -> Callable[[], object]:
    index = getattr(scheduler, "capacity", None)
    if index is not None:
        return index.agent_capacities  # type: ignore[no-any-return,unused-ignore]
    allocations = list(scheduler.allocations.values())
    return lambda: snapshot.agent_capacities(scheduler.agents.values(), allocations)


def timed(
    call: Callable[[], object], budget_s: float, min_reps: int, max_reps: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each call (CPU time tells a loaded machine's
    waiting apart from the work itself)."""
    times: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(times) < min_reps or (
        len(times) < max_reps and time.perf_counter() - started < budget_s
    ):
        t0, c0 = time.perf_counter(), time.process_time()
        call()
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return times, cpu


def p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", help="scenario name (repeatable)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--max-reps", type=int, default=200)
    args = parser.parse_args(argv)
    planned = getattr(Scheduler, "_plan", None)
    code = "incremental (_plan)" if planned is not None else "replayed main (_schedule)"
    print(f"# {code}; python {sys.version.split()[0]}", file=sys.stderr)
    print(
        "| scenario | agents×slots | live | queued | capacities p50 ms | pass p50 ms "
        "| pass p99 ms | pass max ms | pass CPU p50 ms | passes | placed/pass |"
    )
    print("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        scheduler = build(scenario)
        caps, _ = timed(capacities_call(scheduler), args.budget / 4, args.min_reps, args.max_reps)
        decide: Callable[[], FitResult | None] = (
            scheduler._plan if planned is not None else partial(replayed_pass, scheduler)
        )
        result = decide() or FitResult()
        passes, cpu = timed(decide, args.budget, args.min_reps, args.max_reps)
        print(
            f"| {scenario.name} | {scenario.agents}×{scenario.slots_per_agent} "
            f"| {scenario.live} | {scenario.queued} | {statistics.median(caps):.1f} "
            f"| {statistics.median(passes):.1f} | {p99(passes):.1f} | {max(passes):.1f} "
            f"| {statistics.median(cpu):.1f} | {len(passes)} | {len(result.assignments)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
