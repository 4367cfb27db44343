"""Creating tasks of any type: one row per task, one per allocation, then a scheduler event.

Commands use this now; trials, shells, notebooks and TensorBoards build their launch spec and
call :func:`submit_task` the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from master import models
from master.api.errors import bad_request
from master.scheduler.state import Allocation, AllocationState, AllocationSubmitted
from master.scheduler.store import allocation_from_rows
from master.state import MasterState


@dataclass
class TaskSpec:
    task_type: str
    owner_id: int
    description: str
    resource_pool: str | None
    slots: int
    priority: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # Host paths linked into the task's directory: {"host_path", "container_path"} each.
    bind_mounts: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Submitted:
    task_id: str
    allocation_id: str
    rejection: str | None


async def submit_task(state: MasterState, spec: TaskSpec) -> Submitted:
    """Store ``spec`` and hand it to the scheduler; ``rejection`` says why it can never run."""
    pools = [p.pool_name for p in state.config.resource_pools]
    # As in Determined: a task that needs no slot goes to the aux pool unless it names one.
    default = (
        state.config.aux_resource_pool if spec.slots == 0 else state.config.default_resource_pool
    )
    pool = spec.resource_pool or default
    if pool not in pools:
        raise bad_request(f"resources.resource_pool: unknown pool '{pool}'; available: {pools}")
    task_id = str(uuid.uuid4())
    allocation_id = f"{task_id}.1"
    now = state.clock()
    launch: dict[str, Any] = {"argv": spec.argv, "env": spec.env, "files": spec.files}
    if spec.bind_mounts:
        launch["bind_mounts"] = spec.bind_mounts
    config = {**spec.config, "launch": launch}

    def write(session: Any) -> Allocation:
        task = models.Task(
            id=task_id,
            task_type=spec.task_type,
            owner_id=spec.owner_id,
            description=spec.description,
            config=config,
            resource_pool=pool,
            slots=spec.slots,
            priority=spec.priority,
            state=AllocationState.QUEUED.value,
            created_at=now,
        )
        session.add(task)
        session.flush()
        row = models.Allocation(
            id=allocation_id,
            task_id=task_id,
            state=AllocationState.QUEUED.value,
            agent_slots={},
            created_at=now,
        )
        session.add(row)
        session.flush()
        owner = session.scalars(
            select(models.User.username).where(models.User.id == spec.owner_id)
        ).one()
        return allocation_from_rows(row, task, owner)

    # The scheduler gets the allocation as stored here: it reads nothing back.
    allocation = await state.db.run(write)
    rejection = await state.scheduler.call(
        AllocationSubmitted(allocation_id=allocation_id, allocation=allocation)
    )
    return Submitted(task_id, allocation_id, rejection)
