"""Creating tasks of any type: one row per task, one per allocation, handed to the scheduler.

Commands, trials, shells, notebooks and TensorBoards build their launch spec and call
:func:`submit_task`. The rows are made here but stored by the scheduler, in the transaction of
the pass that takes the submission (with every other submission and change of that pass), and
the submitter is answered once that transaction has committed: a submission costs no
transaction of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

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
    # The owner's username when the submitter has it (else read from the database).
    owner_name: str | None = None


@dataclass
class Submitted:
    task_id: str
    allocation_id: str
    rejection: str | None
    # The stored task row (detached) and the scheduler's live view of its allocation.
    task: models.Task
    allocation: Allocation


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

    owner = spec.owner_name
    if owner is None:
        owner = await state.db.run(partial(_username, user_id=spec.owner_id))
    task_values: dict[str, Any] = {
        "id": task_id,
        "task_type": spec.task_type,
        "owner_id": spec.owner_id,
        "description": spec.description,
        "config": config,
        "resource_pool": pool,
        "slots": spec.slots,
        "priority": spec.priority,
        "state": AllocationState.QUEUED.value,
        "created_at": now,
    }
    allocation_values: dict[str, Any] = {
        "id": allocation_id,
        "task_id": task_id,
        "state": AllocationState.QUEUED.value,
        "agent_slots": {},
        "is_ready": False,
        "created_at": now,
    }
    task = models.Task(**task_values)  # never added to a session: the reply's view
    allocation = allocation_from_rows(models.Allocation(**allocation_values), task, owner)
    # Stored in the scheduler's pass, answered once that pass has committed.
    rejection = await state.scheduler.call(
        AllocationSubmitted(
            allocation_id=allocation_id,
            allocation=allocation,
            rows=[(models.Task, task_values), (models.Allocation, allocation_values)],
        )
    )
    return Submitted(task_id, allocation_id, rejection, task, allocation)


def _username(session: Session, user_id: int) -> str:
    return session.scalars(select(models.User.username).where(models.User.id == user_id)).one()
