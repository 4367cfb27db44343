"""``/api/v1/experiments``: create, list, describe, pause/activate/kill, archive, labels, and an
experiment's trials and checkpoints (docs/design/experiments.md, "REST used by people").

State changes go through the experiment engine (``request.app.state.experiments``); reads come
straight from the database, shaped by ``master.experiments.views``.

This module holds every route of the prefix and the helpers the trial, checkpoint and preemption
routes share (:func:`master_state`, :func:`engine_of`, :func:`engine_call`); checkpoint pages
and their orders are ``master.api.checkpoint_pages``'s. What a new experiment must pass before
the engine sees it (request fields, config, warm start, model definition) is the bulk of
creating, and lives in
``master.api.experiment_create``; the create route here only posts its event and reads back.
"""

from __future__ import annotations

import base64
import io
import tarfile
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import Select, and_, delete, exists, false, func, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.checkpoint_pages import checkpoint_page
from master.api.cost import experiments_with_cost
from master.api.errors import ApiError, bad_request, forbidden, not_found
from master.api.experiment_create import CreateExperimentRequest, new_experiment
from master.api.experiment_schemas import (
    CheckpointList,
    ExperimentCreated,
    ExperimentList,
    ExperimentReply,
    Labels,
    ModelDefinition,
    TrialList,
)
from master.api.openapi import documented
from master.api.paging import page, sort_order
from master.api.schemas import Empty
from master.api.wire import Int64
from master.experiments import views
from master.experiments.engine import ExperimentEngine
from master.experiments.live import EngineError, ExperimentAction
from master.experiments.states import EXPERIMENT_TERMINAL
from master.scheduler.state import AllocationState
from master.state import MasterState

router = APIRouter(prefix="/api/v1/experiments")

DEFAULT_EXPERIMENT_LIMIT = 100
_EXPERIMENT_SORTS: dict[str, Any] = {
    "SORT_BY_UNSPECIFIED": models.Experiment.id,
    "SORT_BY_ID": models.Experiment.id,
    "SORT_BY_NAME": models.Experiment.name,
    "SORT_BY_DESCRIPTION": models.Experiment.description,
    "SORT_BY_START_TIME": models.Experiment.start_time,
    "SORT_BY_END_TIME": models.Experiment.end_time,
    "SORT_BY_STATE": models.Experiment.state,
    "SORT_BY_PROGRESS": models.Experiment.progress,
    "SORT_BY_USER": (
        select(models.User.username)
        .where(models.User.id == models.Experiment.owner_id)
        .scalar_subquery()
    ),
    "SORT_BY_NUM_TRIALS": (
        select(func.count(models.Trial.id))
        .where(models.Trial.experiment_id == models.Experiment.id)
        .scalar_subquery()
    ),
    "SORT_BY_RESOURCE_POOL": models.Experiment.resource_pool,
}
_TRIAL_SORTS = {
    "SORT_BY_UNSPECIFIED": models.Trial.id,
    "SORT_BY_ID": models.Trial.id,
    "SORT_BY_START_TIME": models.Trial.start_time,
    "SORT_BY_END_TIME": models.Trial.end_time,
    "SORT_BY_STATE": models.Trial.state,
    "SORT_BY_BATCHES_PROCESSED": models.Trial.total_batches,
    "SORT_BY_RESTARTS": models.Trial.restarts,
}


def master_state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


def engine_of(request: Request) -> ExperimentEngine:
    engine: ExperimentEngine = request.app.state.experiments
    return engine


def load_experiment(session: Session, experiment_id: int) -> models.Experiment:
    row = session.get(models.Experiment, experiment_id)
    if row is None:
        raise not_found(f"experiment {experiment_id}")
    return row


def check_owner(user: models.User, owner_id: int, what: str) -> None:
    if user.id != owner_id and not user.admin:
        raise forbidden(f"user '{user.username}' may only change their own {what}s")


async def engine_call(engine: ExperimentEngine, event: Any) -> Any:
    try:
        return await engine.call(event)
    except EngineError as exc:
        raise ApiError(exc.status, str(exc)) from exc


# ---- create --------------------------------------------------------------------------------------


@router.post("", **documented(ExperimentCreated, 404, 409))
async def create_experiment(
    body: CreateExperimentRequest,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    # Checked by ``experiment_create``; ``validateOnly`` answers a placeholder experiment.
    state = master_state(request)
    engine = engine_of(request)
    event = await new_experiment(body, state, engine, owner_id=user.id)
    if body.validate_only:
        return {
            "experiment": views.placeholder_experiment(),
            "config": views.public_config(event.config.model_dump(mode="json")),
        }
    experiment_id = await engine_call(engine, event)

    def read(session: Session) -> dict[str, Any]:
        row = load_experiment(session, experiment_id)
        return {
            "experiment": views.experiments_json(session, [row], state.clock())[0],
            "config": views.public_config(row.config),
        }

    return await state.db.run(read)


# ---- list and describe ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentFilters:
    archived: bool | None
    users: list[str]
    user_ids: list[int]
    states: list[str]
    labels: list[str]
    name: str | None
    description: str | None
    project_id: int | None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.archived is not None:
            query = query.where(models.Experiment.archived == self.archived)
        if self.users:
            owner_ids = select(models.User.id).where(models.User.username.in_(self.users))
            query = query.where(models.Experiment.owner_id.in_(owner_ids))
        if self.user_ids:
            query = query.where(models.Experiment.owner_id.in_(self.user_ids))
        if self.states:
            query = query.where(models.Experiment.state.in_(self.states))
        for label in self.labels:
            query = query.where(
                exists().where(
                    and_(
                        models.ExperimentLabel.experiment_id == models.Experiment.id,
                        models.ExperimentLabel.label == label,
                    )
                )
            )
        if self.name:
            query = query.where(models.Experiment.name.contains(self.name, autoescape=True))
        if self.description:
            column = models.Experiment.description
            query = query.where(column.contains(self.description, autoescape=True))
        if self.project_id not in (None, 0, views.DEFAULT_PROJECT_ID):
            query = query.where(false())
        return query


@router.get("", **documented(ExperimentList))
def list_experiments(
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    archived: bool | None = None,
    users: list[str] = Query([]),
    user_ids: list[Int64] = Query([], alias="userIds"),
    states: list[str] = Query([]),
    labels: list[str] = Query([]),
    name: str | None = None,
    description: str | None = None,
    sort_by: str = Query("SORT_BY_ID", alias="sortBy"),
    order_by: str = Query("ORDER_BY_ASC", alias="orderBy"),
    project_id: Int64 | None = Query(None, alias="projectId"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Determined's paging: ``limit`` 0 means 100, -1 everything, -2 only the count; a negative
    ``offset`` counts from the end."""
    state = master_state(request)
    column = _EXPERIMENT_SORTS.get(sort_by)
    if column is None:
        raise bad_request(f"sortBy: {sort_by!r} is not one of {sorted(_EXPERIMENT_SORTS)}")
    filters = ExperimentFilters(
        archived, users, user_ids, states, labels, name, description, project_id
    )
    with state.db.session() as session:
        total = session.scalar(filters.apply(select(func.count()).select_from(models.Experiment)))
        window = page(offset, limit, int(total or 0), default_limit=DEFAULT_EXPERIMENT_LIMIT)
        rows = session.scalars(
            filters.apply(select(models.Experiment))
            .order_by(*sort_order(column, order_by), models.Experiment.id)
            .offset(window.start)
            .limit(window.count)
        ).all()
        return {
            "experiments": experiments_with_cost(session, rows, state.clock()),
            "pagination": window.pagination,
        }


def _job_summary(engine: ExperimentEngine, state: MasterState, experiment_id: int) -> Any:
    experiment = engine.experiments.get(experiment_id)
    if experiment is None:
        return None
    scheduled = any(
        (live := state.scheduler.allocations.get(t.allocation_id or "")) is not None
        and live.state != AllocationState.QUEUED
        for t in experiment.trials.values()
    )
    return {"state": "STATE_SCHEDULED" if scheduled else "STATE_QUEUED", "jobsAhead": 0}


@router.get("/{experiment_id}", **documented(ExperimentReply, 404))
async def get_experiment(
    experiment_id: Int64, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """Async, so the job summary reads the engine's memory on the event loop it lives on."""
    state = master_state(request)

    def read(session: Session) -> dict[str, Any]:
        row = load_experiment(session, experiment_id)
        return {
            "experiment": experiments_with_cost(session, [row], state.clock())[0],
            "config": views.public_config(row.config),
        }

    body = await state.db.run(read)
    body["jobSummary"] = _job_summary(engine_of(request), state, experiment_id)
    return body


@router.get("/{experiment_id}/model_def", **documented(ModelDefinition, 404))
def get_model_def(
    experiment_id: Int64, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """The model definition as Determined's ``b64Tgz`` (a base64 gzipped tar)."""
    state = master_state(request)
    with state.db.session() as session:
        load_experiment(session, experiment_id)
        definition = session.get(models.ExperimentModelDefinition, experiment_id)
        files = dict(definition.files) if definition is not None else {}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, content in sorted(files.items()):
            data = base64.b64decode(content)
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return {"b64Tgz": base64.b64encode(buffer.getvalue()).decode()}


# ---- actions -------------------------------------------------------------------------------------


async def _act(
    request: Request,
    experiment_id: int,
    user: models.User,
    action: Literal["pause", "activate", "kill"],
) -> dict[str, Any]:
    state = master_state(request)
    row = await state.db.run(lambda s: load_experiment(s, experiment_id))
    check_owner(user, row.owner_id, "experiment")
    if action != "kill" and row.state in {s.value for s in EXPERIMENT_TERMINAL}:
        verb = "paused" if action == "pause" else "activated"
        raise ApiError(
            409,
            f"experiment {experiment_id} is {row.state}; only STATE_ACTIVE or STATE_PAUSED "
            f"experiments can be {verb}",
        )
    await engine_call(engine_of(request), ExperimentAction(experiment_id, action, by=user.username))
    return {}


@router.post("/{experiment_id}/pause", **documented(Empty, 404, 409))
async def pause_experiment(
    experiment_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    return await _act(request, experiment_id, user, "pause")


@router.post("/{experiment_id}/activate", **documented(Empty, 404, 409))
async def activate_experiment(
    experiment_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    return await _act(request, experiment_id, user, "activate")


@router.post("/{experiment_id}/kill", **documented(Empty, 404, 409))
async def kill_experiment(
    experiment_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    return await _act(request, experiment_id, user, "kill")


@router.post("/{experiment_id}/cancel", **documented(Empty, 404, 409))
async def cancel_experiment(
    experiment_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """Determined's ``det experiment cancel``: like kill here (trials stop at once)."""
    return await _act(request, experiment_id, user, "kill")


def _set_archived(request: Request, experiment_id: int, user: models.User, value: bool) -> None:
    with master_state(request).db.session() as session:
        row = load_experiment(session, experiment_id)
        check_owner(user, row.owner_id, "experiment")
        if value and row.state not in {s.value for s in EXPERIMENT_TERMINAL}:
            raise ApiError(
                409,
                f"experiment {experiment_id} is {row.state}; only ended experiments "
                "(STATE_COMPLETED, STATE_CANCELED, STATE_ERROR) can be archived",
            )
        row.archived = value


@router.post("/{experiment_id}/archive", **documented(Empty, 404, 409))
def archive_experiment(
    experiment_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    _set_archived(request, experiment_id, user, True)
    return {}


@router.post("/{experiment_id}/unarchive", **documented(Empty, 404, 409))
def unarchive_experiment(
    experiment_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    _set_archived(request, experiment_id, user, False)
    return {}


def _labels(session: Session, experiment_id: int) -> list[str]:
    return list(
        session.scalars(
            select(models.ExperimentLabel.label)
            .where(models.ExperimentLabel.experiment_id == experiment_id)
            .order_by(models.ExperimentLabel.label)
        )
    )


@router.put("/{experiment_id}/labels/{label}", **documented(Labels, 404))
def put_label(
    experiment_id: Int64,
    label: str,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    if not label.strip() or len(label) > 255:
        raise bad_request("label: must be 1 to 255 characters, not only spaces")
    with master_state(request).db.session() as session:
        row = load_experiment(session, experiment_id)
        check_owner(user, row.owner_id, "experiment")
        if label not in _labels(session, experiment_id):
            session.add(models.ExperimentLabel(experiment_id=experiment_id, label=label))
            session.flush()
        return {"labels": _labels(session, experiment_id)}


@router.delete("/{experiment_id}/labels/{label}", **documented(Labels, 404))
def delete_label(
    experiment_id: Int64,
    label: str,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    with master_state(request).db.session() as session:
        row = load_experiment(session, experiment_id)
        check_owner(user, row.owner_id, "experiment")
        session.execute(
            delete(models.ExperimentLabel).where(
                models.ExperimentLabel.experiment_id == experiment_id,
                models.ExperimentLabel.label == label,
            )
        )
        return {"labels": _labels(session, experiment_id)}


# ---- trials and checkpoints of an experiment -----------------------------------------------------


@router.get("/{experiment_id}/trials", **documented(TrialList, 404))
def experiment_trials(
    experiment_id: Int64,
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    states: list[str] = Query([]),
    sort_by: str = Query("SORT_BY_ID", alias="sortBy"),
    order_by: str = Query("ORDER_BY_ASC", alias="orderBy"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """``limit`` 0: every trial."""
    state = master_state(request)
    column = _TRIAL_SORTS.get(sort_by)
    if column is None:
        raise bad_request(f"sortBy: {sort_by!r} is not one of {sorted(_TRIAL_SORTS)}")
    with state.db.session() as session:
        load_experiment(session, experiment_id)
        where = [models.Trial.experiment_id == experiment_id]
        if states:
            where.append(models.Trial.state.in_(states))
        total = session.scalar(select(func.count()).select_from(models.Trial).where(*where))
        window = page(offset, limit, int(total or 0))
        rows = session.scalars(
            select(models.Trial)
            .where(*where)
            .order_by(*sort_order(column, order_by), models.Trial.id)
            .offset(window.start)
            .limit(window.count)
        ).all()
        return {
            "trials": views.trials_json(session, rows, state.clock()),
            "pagination": window.pagination,
        }


@router.get("/{experiment_id}/checkpoints", **documented(CheckpointList, 404))
def experiment_checkpoints(
    experiment_id: Int64,
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    states: list[str] = Query([]),
    sort_by: str = Query("SORT_BY_UNSPECIFIED", alias="sortByAttr"),
    order_by: str = Query("ORDER_BY_UNSPECIFIED", alias="orderBy"),
    sort_by_metric: str = Query("", alias="sortByMetric"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    with master_state(request).db.session() as session:
        load_experiment(session, experiment_id)
        where = [models.Checkpoint.experiment_id == experiment_id]
        return checkpoint_page(
            session,
            where,
            offset,
            limit,
            states,
            sort_by,
            order_by,
            sort_by_metric=sort_by_metric,
            experiment_id=experiment_id,
        )
