"""``/api/v1/commands``: run a program on the cluster, list, describe, kill."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent.context_files import ContextError, validate_context
from harness.task_config import CommandConfig
from master import auth, models
from master.api.errors import bad_request, forbidden, not_found
from master.api.openapi import documented
from master.api.schemas import CommandKilled, CommandList, CommandReply
from master.api.tasks import load_task
from master.api.wire import CONTAINER_STATES, WireModel, json_response, timestamp
from master.api.workspaces import DEFAULT_WORKSPACE_ID
from master.scheduler.state import KillTask
from master.state import MasterState
from master.tasks import TaskSpec, submit_task

router = APIRouter(prefix="/api/v1/commands")
C = TypeVar("C", bound=BaseModel)
TASK_TYPE = "COMMAND"


# Determined's limit on an uploaded context, base64 included.
MAX_CONTEXT_BYTES = 96 * 1024 * 1024
# tar type flags Determined's client sends in v1File.type: regular file, directory.
_REGULAR_FILE, _DIRECTORY = (48, "0"), (53, "5")


class ContextFile(WireModel):
    """One entry of a context directory, as Determined's client uploads it (v1File)."""

    path: str
    type: int | str = 48
    content: str = ""
    mtime: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class LaunchCommandRequest(WireModel):
    config: dict[str, Any]
    files: list[ContextFile] = []
    workspace_id: int | None = None


def context_files(files: list[ContextFile]) -> dict[str, str]:
    """Regular files of an uploaded context as path → base64 content, for the agent to write;
    a 400 naming the file for any that :func:`agent.context_files.validate_context` refuses."""
    total = sum(len(f.content) for f in files)
    if total > MAX_CONTEXT_BYTES:
        raise bad_request(
            f"files: the context is {total / 2**20:.1f} MiB encoded; the limit is "
            f"{MAX_CONTEXT_BYTES / 2**20:.0f} MiB"
        )
    kept: dict[str, str] = {}
    indexes: dict[str, int] = {}
    for index, item in enumerate(files):
        if item.type in _DIRECTORY:
            continue
        if item.type not in _REGULAR_FILE:
            raise bad_request(f"files.{index}.type: {item.type!r} is not a regular file or dir")
        kept[item.path] = item.content
        indexes.setdefault(item.path, index)
    try:
        validate_context(kept)
    except ContextError as exc:
        raise bad_request(f"files.{indexes[exc.path]}.path: {exc}") from exc
    return kept


def _state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


def parse_config(raw: dict[str, Any], model: type[C], kind: str = "command") -> C:
    """``raw`` as ``model``, or a 400 naming every bad field by its path."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise bad_request(f"invalid {kind} config: {problems}") from exc


def command_json(session: Session, task: models.Task) -> dict[str, Any]:
    owner = session.get_one(models.User, task.owner_id)
    allocation = session.scalars(
        select(models.Allocation)
        .where(models.Allocation.task_id == task.id)
        .order_by(models.Allocation.created_at.desc())
    ).first()
    if allocation is None:
        return task_json(task, owner, task.state)
    return task_json(
        task,
        owner,
        task.state,
        allocation.id,
        allocation.state,
        allocation.exit_reason,
        allocation.exit_code,
    )


def task_json(
    task: models.Task,
    owner: models.User,
    state: str,
    allocation_id: str | None = None,
    allocation_state: str | None = None,
    exit_reason: str | None = None,
    exit_code: int | None = None,
) -> dict[str, Any]:
    """Determined's command: its task in ``state``, its owner and its latest allocation
    (None: none yet)."""
    container = None
    if allocation_state in CONTAINER_STATES:
        container = {"id": allocation_id, "state": CONTAINER_STATES[allocation_state]}
    return {
        "id": task.id,
        "description": task.description,
        "state": state,
        "container": container,
        "username": owner.username,
        "userId": owner.id,
        "displayName": owner.display_name or "",
        "resourcePool": task.resource_pool,
        "exitStatus": exit_reason,
        "exitCode": exit_code,
        "jobId": task.id,
        "workspaceId": DEFAULT_WORKSPACE_ID,
        "registeredTime": timestamp(task.created_at),
        "startTime": timestamp(task.created_at),
        "endTime": timestamp(task.ended_at),
        # Commands have no idle timeout; services (master.api.services) fill it in.
        "idleDeadline": None,
    }


# Parts of a task's stored config that only the master and the task itself may see.
PRIVATE_CONFIG_KEYS = frozenset({"launch", "secrets"})


def public_config(task: models.Task) -> dict[str, Any]:
    return {k: v for k, v in task.config.items() if k not in PRIVATE_CONFIG_KEYS}


@router.post("", **documented(CommandReply))
async def launch_command(
    body: LaunchCommandRequest, request: Request, user: models.User = Depends(auth.current_user)
) -> Response:
    state = _state(request)
    config = parse_config(body.config, CommandConfig)
    spec = TaskSpec(
        task_type=TASK_TYPE,
        owner_id=user.id,
        description=config.description or config.default_description(),
        resource_pool=config.resources.resource_pool,
        slots=config.resources.slots,
        priority=config.resources.priority,
        argv=config.argv(),
        env=config.environment.environment_variables,
        files=context_files(body.files),
        config=config.model_dump(mode="json"),
        owner_name=user.username,
    )
    submitted = await submit_task(state, spec)
    if submitted.rejection:
        raise bad_request(f"resources.slots: {submitted.rejection}")
    # As stored by the pass that took it: nothing to read back.
    allocation = submitted.allocation
    state_now = allocation.state.value
    command = task_json(submitted.task, user, state_now, allocation.id, state_now)
    return json_response({"command": command, "config": public_config(submitted.task)})


@router.get("", **documented(CommandList))
def list_commands(request: Request, _: models.User = Depends(auth.current_user)) -> dict[str, Any]:
    with _state(request).db.session() as session:
        tasks = session.scalars(
            select(models.Task)
            .where(models.Task.task_type == TASK_TYPE)
            .order_by(models.Task.created_at)
        )
        return {"commands": [command_json(session, t) for t in tasks]}


@router.get("/{command_id}", **documented(CommandReply, 404))
def get_command(
    command_id: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with _state(request).db.session() as session:
        task = load_task(session, command_id)
        if task.task_type != TASK_TYPE:
            raise not_found(f"command {command_id}")
        return {"command": command_json(session, task), "config": public_config(task)}


async def kill_task_of_type(
    state: MasterState, task_id: str, task_type: str, user: models.User
) -> None:
    """Kill a task the caller owns (admins: any), after checking it is of ``task_type``."""
    noun = task_type.lower()

    def owner_of(session: Session) -> int:
        task = load_task(session, task_id)
        if task.task_type != task_type:
            raise not_found(f"{noun} {task_id}")
        return task.owner_id

    owner_id = await state.db.run(owner_of)
    if owner_id != user.id and not user.admin:
        raise forbidden(f"user '{user.username}' may only kill their own {noun}s")
    await state.scheduler.call(KillTask(task_id=task_id, reason=f"killed by {user.username}"))


@router.post("/{command_id}/kill", **documented(CommandKilled, 404))
async def kill_command(
    command_id: str, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = _state(request)
    await kill_task_of_type(state, command_id, TASK_TYPE, user)

    def read(session: Session) -> dict[str, Any]:
        return {"command": command_json(session, load_task(session, command_id))}

    return await state.db.run(read)
