"""Why a queued job waits, in words a person reads in the console's Queue view.

The scheduler knows why a job did not fit this pass ("waiting for 2 free slots in resource pool
'gpu'"); the provisioner knows what it is doing about it (instances starting, the pool at
``max_instances``, a launch that failed). :func:`queue_reason` combines the two, from plain
values, so every wording is table-testable:

- "behind 3 jobs of higher priority" when better-priority jobs of the same pool wait too;
- "launching 2 × g5.xlarge spot, 1 joined" while a pool's instances start;
- "pool 'gpu' at max_instances 4" when it may not grow;
- "pool 'gpu' cannot launch: <what the cloud said>" when it is degraded, or backing off;
- "waiting for an agent to join pool 'x'" for a pool with no provider and no agent;
- the scheduler's own reason otherwise.
"""

from __future__ import annotations

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
    alive: int = 0  # instances launched and not terminated
    max_instances: int = 0
    degraded: str | None = None  # why the provider cannot launch (config errors)
    backoff: str | None = None  # why an offer is backed off (capacity, quota)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def pool_reason(slots: int, pool: PoolView, scheduler_reason: str | None) -> str:
    """What the pool is doing about a job of ``slots`` slots that does not fit now."""
    if pool.provisioned:
        if pool.degraded:
            return f"pool '{pool.name}' cannot launch: {pool.degraded}"
        if pool.starting:
            market = f" {pool.starting_market}" if pool.starting_market else ""
            joined = pool.alive - pool.starting
            return f"launching {pool.alive} × {pool.instance_type}{market}, {joined} joined"
        if pool.alive >= pool.max_instances:
            return f"pool '{pool.name}' at max_instances {pool.max_instances}"
        if pool.backoff:
            return f"pool '{pool.name}' backing off a launch: {pool.backoff}"
        return f"waiting for pool '{pool.name}' to launch an instance"
    if pool.agents == 0:
        return f"waiting for an agent to join pool '{pool.name}'"
    if scheduler_reason:
        return scheduler_reason
    return (
        f"waiting for {_plural(slots, 'free slot')} in pool '{pool.name}' "
        f"(at most {pool.most_free_on_one_agent} free on one agent now)"
    )


def queue_reason(
    slots: int, ahead: int, pool: PoolView | None, scheduler_reason: str | None
) -> str:
    """Why a queued job of ``slots`` slots waits, with ``ahead`` jobs of better priority in
    its pool waiting before it."""
    parts = []
    if ahead:
        parts.append(f"behind {_plural(ahead, 'job')} of higher priority")
    if pool is None:
        parts.append(scheduler_reason or "its resource pool is not configured")
    else:
        parts.append(pool_reason(slots, pool, scheduler_reason))
    return "; ".join(parts)
