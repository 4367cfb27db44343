"""The scheduler's reads and writes of the database.

The reads run at start (``load_*``). The writes are what a pass collects: the scheduler queues
them while it handles a pass's events and runs them, in order, in the pass's one transaction
(on its own worker thread), so the database always sees its changes in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agent.protocol import Hello
from master import auth, models
from master.scheduler.state import ACTIVE_STATES, Allocation, AllocationState

# Task types whose token is report-only (master.auth): it never acts as its owner.
TRIAL_TASK_TYPE = "TRIAL"
# Task types whose allocation is ready only when its service says so (see AllocationReady).
SERVICE_TASK_TYPES = frozenset({"SHELL", "NOTEBOOK", "TENSORBOARD"})
PREEMPTIBLE_TASK_TYPES = frozenset({"TRIAL"})
# Task types that may span agents when no single agent has their slots (distributed trials:
# their launchers meet through master.rendezvous); fit still prefers one agent.
MULTI_AGENT_TASK_TYPES = frozenset({"TRIAL"})


class AllocationNotFound(LookupError):
    pass


@dataclass
class AgentRecord:
    """What the database remembers of an agent across its connections and master restarts;
    the scheduler keeps every agent's in memory (loaded at start, written through)."""

    registered_at: datetime
    enabled: bool = True
    draining: bool = False


def allocation_from_rows(row: models.Allocation, task: models.Task, owner: str) -> Allocation:
    """The scheduler's view of a stored allocation and its task, owned by ``owner``."""
    return _from_rows(row, task, owner)


def _from_rows(row: models.Allocation, task: models.Task, owner: str) -> Allocation:
    launch = task.config.get("launch", {})
    return Allocation(
        id=row.id,
        task_id=task.id,
        task_type=task.task_type,
        owner=owner,
        owner_id=task.owner_id,
        pool=task.resource_pool,
        slots=task.slots,
        priority=task.priority,
        submitted_at=row.created_at,
        argv=list(launch.get("argv", [])),
        env=dict(launch.get("env", {})),
        files=dict(launch.get("files", {})),
        bind_mounts=list(launch.get("bind_mounts", [])),
        state=AllocationState(row.state),
        agent_slots={k: list(v) for k, v in (row.agent_slots or {}).items()},
        started_at=row.started_at,
        single_agent=task.task_type not in MULTI_AGENT_TASK_TYPES,
        service=task.task_type in SERVICE_TASK_TYPES,
        # Trials checkpoint and exit when asked, so the scheduler may preempt them.
        preemptible=task.task_type in PREEMPTIBLE_TASK_TYPES,
        service_ready=row.is_ready,
        proxy_address=row.proxy_address,
    )


def _query() -> Any:
    return (
        select(models.Allocation, models.Task, models.User.username)
        .join(models.Task, models.Task.id == models.Allocation.task_id)
        .join(models.User, models.User.id == models.Task.owner_id)
    )


def load_active(session: Session) -> list[Allocation]:
    """Every allocation not yet terminated, oldest first (for rebuilding after a restart)."""
    rows = session.execute(
        _query()
        .where(models.Allocation.state.in_([s.value for s in ACTIVE_STATES]))
        .order_by(models.Allocation.created_at)
    ).all()
    return [_from_rows(*row) for row in rows]


def load_allocation(session: Session, allocation_id: str) -> Allocation:
    row = session.execute(_query().where(models.Allocation.id == allocation_id)).first()
    if row is None:
        raise AllocationNotFound(allocation_id)
    return _from_rows(*row)


def save_states(session: Session, allocations: list[Allocation]) -> None:
    """Store the state of ``allocations`` as they are now (state, readiness, placement, proxy
    address, start time once known; their tasks' state): one executemany per table."""
    if not allocations:
        return
    for with_start in (True, False):
        rows = [
            {
                "id": a.id,
                "state": a.state.value,
                "is_ready": a.is_ready,
                "agent_slots": a.agent_slots,
                "proxy_address": a.proxy_address,
                **({"started_at": a.started_at} if with_start else {}),
            }
            for a in allocations
            if (a.started_at is not None) == with_start
        ]
        if rows:
            session.execute(update(models.Allocation), rows)
    tasks = {a.task_id: a.state.value for a in allocations}
    session.execute(update(models.Task), [{"id": k, "state": v} for k, v in tasks.items()])


@dataclass(frozen=True)
class Finished:
    """An allocation ended for good in a pass: its exit code and why, and when."""

    allocation: Allocation
    exit_code: int | None
    reason: str
    now: datetime


def save_finished(session: Session, finished: list[Finished]) -> None:
    """Terminate the allocations and their tasks for good, and revoke the allocations'
    tokens: one statement per table for the whole pass."""
    if not finished:
        return
    session.execute(
        update(models.Allocation),
        [
            {
                "id": f.allocation.id,
                "state": AllocationState.TERMINATED.value,
                "ended_at": f.now,
                "exit_code": f.exit_code,
                "exit_reason": f.reason,
                "is_ready": False,
                "proxy_address": None,
            }
            for f in finished
        ],
    )
    tasks = {
        f.allocation.task_id: {
            "id": f.allocation.task_id,
            "state": AllocationState.TERMINATED.value,
            "ended_at": f.now,
        }
        for f in finished
    }
    session.execute(update(models.Task), list(tasks.values()))
    auth.revoke_allocation_tokens(session, [f.allocation.id for f in finished])


def revoke_tokens(session: Session, allocation_id: str) -> None:
    """An allocation that goes back to the queue loses its token."""
    auth.revoke_allocation_tokens(session, allocation_id)


def issue_allocation_token(
    session: Session, allocation: Allocation, lifetime: timedelta, now: datetime, token: str
) -> str:
    """Store ``token`` as a task token of the task's owner that lives as long as the
    allocation: a trial's is report-only; a command's, notebook's, shell's or TensorBoard's
    also acts as its owner."""
    owner = allocation.owner_id
    if owner is None:
        owner = session.scalars(
            select(models.User.id).where(models.User.username == allocation.owner)
        ).one()
    return auth.issue_token(
        session,
        owner,
        lifetime,
        now,
        allocation_id=allocation.id,
        acts_as_owner=allocation.task_type != TRIAL_TASK_TYPE,
        token=token,
    )


def agent_joined(session: Session, hello: Hello, now: datetime) -> models.Agent:
    """Record an agent's (re)connection; enable/drain flags persist across restarts."""
    row = session.get(models.Agent, hello.agent_id)
    if row is None:
        row = models.Agent(id=hello.agent_id, registered_at=now, enabled=True, draining=False)
        session.add(row)
    row.resource_pool = hello.resource_pool
    row.last_connected_at = now
    return row


def load_agent_records(session: Session) -> dict[str, AgentRecord]:
    rows = session.execute(
        select(
            models.Agent.id, models.Agent.registered_at, models.Agent.enabled, models.Agent.draining
        )
    )
    return {
        id_: AgentRecord(registered_at, enabled, draining)
        for id_, registered_at, enabled, draining in rows
    }


def pools_with_agents(session: Session) -> list[str]:
    """Pools any agent has ever joined."""
    return list(session.scalars(select(models.Agent.resource_pool).distinct()))


def agent_left(session: Session, agent_id: str, now: datetime) -> None:
    session.execute(
        update(models.Agent).where(models.Agent.id == agent_id).values(last_disconnected_at=now)
    )


def save_agent_flags(session: Session, agent_id: str, enabled: bool, draining: bool) -> None:
    session.execute(
        update(models.Agent)
        .where(models.Agent.id == agent_id)
        .values(enabled=enabled, draining=draining)
    )
