"""Why a queued job waits, in words a person reads in the console's Queue view.

The scheduler knows why a job did not fit this pass ("waiting for 2 free slots in resource pool
'gpu'"); the provisioner knows what it is doing about it (instances starting, the pool at
``max_instances``, a launch that failed). :func:`queue_reason` combines the two, from plain
values, so every wording is table-testable:

- "behind 3 jobs of higher priority" when better-priority jobs of the same pool wait too;
- "launching 2 × g5.xlarge spot, 1 joined" while a pool's instances start, for the jobs those
  instances will run: the first ones in queue order that fit on them (:func:`queue_reasons`);
- "pool 'gpu' at max_instances 4" when it may not grow, with "behind 2 jobs the launching
  instances are for" when instances start but for the jobs ahead of this one;
- "pool 'gpu' cannot launch: <what the cloud said>" when it is degraded, or backing off;
- "waiting for an agent to join pool 'x'" for a pool with no provider and no agent;
- the scheduler's own reason otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolView:
    """A resource pool as the queue's reasons need it, read at one moment."""

    name: str
    provisioned: bool  # has a provider that launches instances
    agents: int  # connected agents
    most_free_on_one_agent: int
    free_slots: int
    instance_type: str = ""
    starting: int = 0  # instances launched whose agent has not joined
    starting_market: str = ""  # their market when they share one (spot, on-demand)
    # Each starting instance's slots; empty when unknown (then they are taken to cover every
    # waiting job, as before per-job coverage).
    starting_slots: tuple[int, ...] = ()
    alive: int = 0  # instances launched and not terminated
    max_instances: int = 0
    degraded: str | None = None  # why the provider cannot launch (config errors)
    backoff: str | None = None  # why an offer is backed off (capacity, quota)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass(frozen=True)
class WaitingJob:
    """One queued job as its reason needs it."""

    slots: int
    ahead: int  # jobs of better priority in its pool waiting before it
    scheduler_reason: str | None = None


def launch_coverage(slots: Sequence[int], starting_slots: Sequence[int]) -> list[bool]:
    """Which of a pool's waiting jobs (their slots, in queue order) the starting instances
    (their slots) are for: each job in turn goes on the first instance with room for it, or a
    job bigger than one instance onto whole untouched ones, as the scheduler will place them
    once they join; a job that finds no room is not covered."""
    room = list(starting_slots)
    covered = []
    for need in slots:
        spot = next((k for k, free in enumerate(room) if free >= need), None)
        if spot is not None:
            room[spot] -= need
            covered.append(True)
            continue
        whole = [k for k, free in enumerate(room) if free and free == starting_slots[k]]
        taken, total = [], 0
        for k in whole:
            if total >= need:
                break
            taken.append(k)
            total += room[k]
        if total >= need:
            for k in taken:
                room[k] = 0
            covered.append(True)
        else:
            covered.append(False)
    return covered


def pool_reason(
    slots: int,
    pool: PoolView,
    scheduler_reason: str | None,
    covered: bool = True,
    behind_launches: int = 0,
) -> str:
    """What the pool is doing about a job of ``slots`` slots that does not fit now.
    ``covered``: the instances starting are (partly) for this job; else ``behind_launches``
    jobs ahead of it in the queue are what they are for."""
    if pool.provisioned:
        if pool.degraded:
            return f"pool '{pool.name}' cannot launch: {pool.degraded}"
        if pool.starting and covered:
            market = f" {pool.starting_market}" if pool.starting_market else ""
            joined = pool.alive - pool.starting
            return f"launching {pool.alive} × {pool.instance_type}{market}, {joined} joined"
        behind = (
            f", behind {_plural(behind_launches, 'job')} the launching instances are for"
            if pool.starting and behind_launches
            else ""
        )
        if pool.alive >= pool.max_instances:
            return f"pool '{pool.name}' at max_instances {pool.max_instances}{behind}"
        if pool.backoff:
            return f"pool '{pool.name}' backing off a launch: {pool.backoff}{behind}"
        return f"waiting for pool '{pool.name}' to launch an instance{behind}"
    if pool.agents == 0:
        return f"waiting for an agent to join pool '{pool.name}'"
    if scheduler_reason:
        return scheduler_reason
    return (
        f"waiting for {_plural(slots, 'free slot')} in pool '{pool.name}' "
        f"(at most {pool.most_free_on_one_agent} free on one agent now)"
    )


def _combine(ahead: int, pool_part: str) -> str:
    parts = []
    if ahead:
        parts.append(f"behind {_plural(ahead, 'job')} of higher priority")
    parts.append(pool_part)
    return "; ".join(parts)


def queue_reason(
    slots: int, ahead: int, pool: PoolView | None, scheduler_reason: str | None
) -> str:
    """Why a queued job of ``slots`` slots waits, with ``ahead`` jobs of better priority in
    its pool waiting before it (alone in its pool's queue: see :func:`queue_reasons`)."""
    return queue_reasons([WaitingJob(slots, ahead, scheduler_reason)], pool)[0]


def queue_reasons(jobs: Sequence[WaitingJob], pool: PoolView | None) -> list[str]:
    """Why each of one pool's waiting jobs (in queue order) waits. Instances that are starting
    are for the first jobs that fit on them (:func:`launch_coverage`); the jobs after those
    wait for the pool to grow, or at its max_instances, behind them."""
    if pool is None:
        return [
            _combine(job.ahead, job.scheduler_reason or "its resource pool is not configured")
            for job in jobs
        ]
    if pool.starting and pool.starting_slots:
        covered = launch_coverage([job.slots for job in jobs], pool.starting_slots)
    else:
        covered = [True] * len(jobs)
    reasons = []
    for index, job in enumerate(jobs):
        behind = sum(covered[:index])
        part = pool_reason(job.slots, pool, job.scheduler_reason, covered[index], behind)
        reasons.append(_combine(job.ahead, part))
    return reasons
