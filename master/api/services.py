"""``/api/v1/shells``, ``/notebooks``, ``/tensorboards``: interactive tasks behind the proxy.

Each kind is a command with a server in it (docs/design/interactive-tasks.md): the master makes
its secrets (a shell's key pair, a notebook's Jupyter token), resolves its idle timeout and
submits it; the task reports where it listens; users reach it at ``/proxy/<id>/``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.shell.keys import generate_keypair
from harness.task_config import ServiceConfig, TensorboardConfig
from harness.units import format_duration, parse_duration
from master import auth, models
from master.api.commands import (
    ContextFile,
    command_json,
    context_files,
    kill_task_of_type,
    parse_config,
    public_config,
)
from master.api.errors import ApiError, bad_request, describe_validation_error, not_found
from master.api.openapi import documented, inline_schema
from master.api.schemas import SERVICE_SHAPES
from master.api.tasks import load_task
from master.api.wire import Int64, WireModel, timestamp
from master.config import MasterConfig
from master.proxy import ProxyHub
from master.scheduler.state import Allocation
from master.state import MasterState
from master.tasks import TaskSpec, submit_task

# The account a shell's SSH server runs as is the agent's; the SSH user name is not checked
# (the key is), so Determined's client may put any name before the '@'.
SHELL_USER_GROUP = {"user": "root", "uid": 0, "group": "root", "gid": 0}


@dataclass(frozen=True)
class Kind:
    task_type: str  # SHELL
    singular: str  # shell
    plural: str  # shells
    config_model: type[ServiceConfig]
    default_idle_timeout: Callable[[MasterConfig], timedelta | None]


SHELL = Kind("SHELL", "shell", "shells", ServiceConfig, lambda c: c.shell_idle_timeout)
NOTEBOOK = Kind(
    "NOTEBOOK", "notebook", "notebooks", ServiceConfig, lambda c: c.notebook_idle_timeout
)
TENSORBOARD = Kind(
    "TENSORBOARD", "tensorboard", "tensorboards", TensorboardConfig, lambda c: c.tensorboard_timeout
)


class LaunchRequest(WireModel):
    config: dict[str, Any] = {}
    files: list[ContextFile] = []
    workspace_id: int | None = None
    template_name: str | None = None
    data: dict[str, Any] | None = None
    # Determined's "answer with the merged config, launch nothing"; its CLI always sends it.
    preview: bool | None = None


class LaunchTensorboardRequest(LaunchRequest):
    # Determined's CLI sends null for the ids it was not given.
    experiment_ids: list[Int64] | None = None
    trial_ids: list[Int64] | None = None


@dataclass
class Launch:
    """What differs between kinds: the program, its environment, secrets and extra config."""

    argv: list[str]
    env: dict[str, str]
    secrets: dict[str, str]
    extra: dict[str, Any]


def _state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


def service_json(
    session: Session,
    task: models.Task,
    state: MasterState,
    viewer: models.User | None,
    hub: ProxyHub | None = None,
) -> dict[str, Any]:
    """A command's fields plus the service's: where it is served, whether it is ready, when
    it will be killed if nobody uses it, and for shells the key pair (the private key only for
    its owner)."""
    body = command_json(session, task)
    allocation = next(
        (a for a in state.scheduler.allocations.values() if a.task_id == task.id), None
    )
    body.update(
        serviceAddress=f"/proxy/{task.id}/",
        isReady=bool(allocation and allocation.is_ready),
        idleTimeout=task.config.get("idle_timeout", "off"),
        idleDeadline=timestamp(idle_deadline(task, allocation, hub)),
    )
    stored = task.config.get("secrets") or {}
    if task.task_type == SHELL.task_type:
        owner = viewer is not None and viewer.id == task.owner_id
        body.update(
            privateKey=stored.get("private_key") if owner else None,
            publicKey=stored.get("public_key"),
            agentUserGroup=dict(SHELL_USER_GROUP),
        )
    if task.task_type == TENSORBOARD.task_type:
        body.update(
            experimentIds=task.config.get("experiment_ids", []),
            trialIds=task.config.get("trial_ids", []),
        )
    return body


def _shell_launch(_: MasterState, __: LaunchRequest) -> Launch:
    pair = generate_keypair(comment="flotilla-shell")
    return Launch(
        argv=["python", "-m", "harness.shell"],
        env={"DET_SHELL_AUTHORIZED_KEYS": pair.public_openssh},
        secrets={"private_key": pair.private_pem, "public_key": pair.public_openssh},
        extra={},
    )


def _notebook_launch(_: MasterState, __: LaunchRequest) -> Launch:
    token = secrets.token_urlsafe(32)
    return Launch(
        argv=["python", "-m", "harness.notebook"],
        env={"DET_NOTEBOOK_TOKEN": token},
        secrets={"notebook_token": token},
        extra={},
    )


def tensorboard_dirs(
    root: Path,
    experiment_ids: list[int],
    trial_ids: list[int],
    exists: Callable[[type[models.Experiment] | type[models.Trial], int], bool],
) -> list[str]:
    """``NAME=PATH`` arguments for ``harness.tensorboard``: one per experiment and trial, each
    of which must already have event files under ``root`` (trials write them there).

    Where there are none, the error says whether the experiment or trial does not exist at all
    (``exists`` asks the database) or has written no event files yet; it never shows ``root``,
    which is a path on the master's machine.
    """
    if not experiment_ids and not trial_ids:
        raise bad_request("experimentIds: give at least one experiment or trial id")
    runs = []
    for experiment_id in experiment_ids:
        path = root / "experiment" / str(experiment_id)
        if not path.is_dir():
            if not exists(models.Experiment, experiment_id):
                raise ApiError(404, f"experiment {experiment_id} does not exist")
            raise ApiError(
                404,
                f"experiment {experiment_id} has no TensorBoard event files yet (its trials "
                "write them as they report metrics)",
            )
        runs.append(f"experiment-{experiment_id}={path}")
    for trial_id in trial_ids:
        found = sorted(root.glob(f"experiment/*/trial/{trial_id}"))
        if not found:
            if not exists(models.Trial, trial_id):
                raise ApiError(404, f"trial {trial_id} does not exist")
            raise ApiError(
                404,
                f"trial {trial_id} has no TensorBoard event files yet (it writes them as it "
                "reports metrics)",
            )
        runs.append(f"trial-{trial_id}={found[0]}")
    return runs


def _tensorboard_launch(state: MasterState, body: LaunchRequest) -> Launch:
    assert isinstance(body, LaunchTensorboardRequest)
    root = state.config.resolved_tensorboard_dir

    def exists(model: type[models.Experiment] | type[models.Trial], row_id: int) -> bool:
        with state.db.session() as session:
            return session.get(model, row_id) is not None

    experiment_ids, trial_ids = body.experiment_ids or [], body.trial_ids or []
    runs = tensorboard_dirs(root, experiment_ids, trial_ids, exists)
    return Launch(
        argv=["python", "-m", "harness.tensorboard", *runs],
        env={},
        secrets={},
        extra={"experiment_ids": experiment_ids, "trial_ids": trial_ids},
    )


def _default_description(kind: Kind, extra: dict[str, Any]) -> str:
    if kind is TENSORBOARD:
        ids = [f"experiment {i}" for i in extra["experiment_ids"]]
        ids += [f"trial {i}" for i in extra["trial_ids"]]
        return f"TensorBoard ({', '.join(ids)})"
    return f"{kind.singular.title()} ({secrets.token_hex(3)})"


async def _read_body(request: Request, model: type[LaunchRequest]) -> LaunchRequest:
    """The launch body (Determined's client sends none for an empty config)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise bad_request(describe_validation_error(list(exc.errors()))) from exc


def make_router(
    kind: Kind,
    launcher: Callable[[MasterState, LaunchRequest], Launch],
    body_model: type[LaunchRequest] = LaunchRequest,
) -> APIRouter:
    router = APIRouter(prefix=f"/api/v1/{kind.plural}")

    async def launch(
        request: Request, user: models.User = Depends(auth.current_user)
    ) -> dict[str, Any]:
        state = _state(request)
        body = await _read_body(request, body_model)
        if body.preview:
            raise bad_request(
                "preview: previews (the merged config without a launch) are not supported; "
                "launch without preview"
            )
        config = parse_config(body.config, kind.config_model, kind.singular)
        timeout = config.effective_idle_timeout(kind.default_idle_timeout(state.config))
        # Off the event loop: launchers read the disk, the database, or make keys.
        launched = await asyncio.to_thread(launcher, state, body)
        stored = config.model_dump(mode="json")
        stored.update(launched.extra, idle_timeout=format_duration(timeout))
        stored["secrets"] = launched.secrets
        spec = TaskSpec(
            task_type=kind.task_type,
            owner_id=user.id,
            description=config.description or _default_description(kind, launched.extra),
            resource_pool=config.resources.resource_pool,
            slots=config.resources.slots,
            priority=config.resources.priority,
            argv=launched.argv,
            env={**config.environment.environment_variables, **launched.env},
            files=context_files(body.files),
            config=stored,
        )
        submitted = await submit_task(state, spec)
        if submitted.rejection:
            raise bad_request(f"resources.slots: {submitted.rejection}")

        def read(session: Session) -> dict[str, Any]:
            task = load_task(session, submitted.task_id)
            return {
                kind.singular: service_json(session, task, state, user, request.app.state.proxy),
                "config": public_config(task),
            }

        return await state.db.run(read)

    def listing(request: Request, user: models.User = Depends(auth.current_user)) -> Any:
        state = _state(request)
        with state.db.session() as session:
            tasks = session.scalars(
                select(models.Task)
                .where(models.Task.task_type == kind.task_type)
                .order_by(models.Task.created_at)
            )
            items = []
            for task in tasks:
                item = service_json(session, task, state, user, request.app.state.proxy)
                item.pop("privateKey", None)
                items.append(item)
            return {kind.plural: items}

    def describe(
        task_id: str, request: Request, user: models.User = Depends(auth.current_user)
    ) -> Any:
        state = _state(request)
        with state.db.session() as session:
            task = load_task(session, task_id)
            if task.task_type != kind.task_type:
                raise not_found(f"{kind.singular} {task_id}")
            return {
                kind.singular: service_json(session, task, state, user, request.app.state.proxy),
                "config": public_config(task),
            }

    async def kill(
        task_id: str, request: Request, user: models.User = Depends(auth.current_user)
    ) -> Any:
        state = _state(request)
        await kill_task_of_type(state, task_id, kind.task_type, user)

        def read(session: Session) -> dict[str, Any]:
            task = load_task(session, task_id)
            hub = request.app.state.proxy
            return {kind.singular: service_json(session, task, state, user, hub)}

        return await state.db.run(read)

    reply, killed, listed = SERVICE_SHAPES[kind.plural]
    # The launch route reads its body itself (Determined's client may send none).
    body = {"content": {"application/json": {"schema": inline_schema(body_model, "validation")}}}
    router.add_api_route(
        "", launch, methods=["POST"], openapi_extra={"requestBody": body}, **documented(reply, 404)
    )
    router.add_api_route("", listing, methods=["GET"], **documented(listed))
    router.add_api_route("/{task_id}", describe, methods=["GET"], **documented(reply, 404))
    router.add_api_route("/{task_id}/kill", kill, methods=["POST"], **documented(killed, 404))
    return router


def idle_deadline(
    task: models.Task, allocation: Allocation | None, hub: ProxyHub | None
) -> datetime | None:
    """When ``master.idle`` kills the task if nothing uses it before: its last activity plus
    its idle timeout, for a ready service with a timeout and no open SSH tunnel (None
    otherwise). An estimate for notebooks: a busy kernel postpones it when it is reached."""
    timeout = idle_timeout_of(task)
    if hub is None or timeout is None or allocation is None or not allocation.is_ready:
        return None
    if allocation.kill_reason or hub.has_open_tunnel(task.id):
        return None
    last = hub.last_activity.get(task.id)
    return last + timeout if last is not None else None


def idle_timeout_of(task: models.Task) -> timedelta | None:
    """The idle timeout resolved when the task was launched (``off``: None)."""
    return parse_duration(task.config.get("idle_timeout", "off"))


routers = [
    make_router(SHELL, _shell_launch),
    make_router(NOTEBOOK, _notebook_launch),
    make_router(TENSORBOARD, _tensorboard_launch, LaunchTensorboardRequest),
]
