"""Changing and removing experiments and checkpoints, on Determined's paths and field names:

- ``PATCH /api/v1/experiments/{experiment.id}`` (``v1PatchExperiment``): ``name``,
  ``description``, ``notes``, ``labels``, ``resources.{maxSlots, weight, priority}`` and
  ``checkpointStorage.{saveExperimentBest, saveTrialBest, saveTrialLatest}`` — what ``det
  experiment set …`` sends. Config changes are validated as a whole config, stored, and given to
  the running experiment (its next trial runs, its queued allocations' priority); a new GC
  policy is applied at once, as Determined's ``set gc-policy`` does;
- ``DELETE /api/v1/experiments/{experimentId}``: an ended experiment, its checkpoints' files,
  its trials' tasks and logs;
- ``POST /api/v1/experiments/{experimentId}/move``: there is one project here, so only a move to
  it (project 1) is accepted;
- ``DELETE /api/v1/checkpoints`` (``checkpointUuids``): checkpoints' files, marked
  ``STATE_DELETED``; never one an unfinished trial would resume from.

The owner of an experiment or an admin may do each.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from harness.experiment_config import ConfigError, parse_experiment_config
from harness.storage import build_storage
from master import auth, models
from master.api.errors import ApiError, bad_request, not_found
from master.api.experiment_schemas import ExperimentCreated
from master.api.experiments import check_owner, engine_of, load_experiment, master_state
from master.api.openapi import documented
from master.api.schemas import Empty
from master.api.wire import Int64, WireModel
from master.experiments import views
from master.experiments.gc import COMPLETED, mark_deleted, pinned_checkpoints
from master.experiments.states import EXPERIMENT_TERMINAL, TRIAL_TERMINAL
from master.scheduler.state import AllocationState

log = logging.getLogger(__name__)
experiments_router = APIRouter(prefix="/api/v1/experiments")
checkpoints_router = APIRouter(prefix="/api/v1/checkpoints")

ONLY_PROJECT_ID = views.DEFAULT_PROJECT_ID


class PatchResources(WireModel):
    max_slots: int | None = None
    weight: float | None = None
    priority: int | None = None


class PatchCheckpointStorage(WireModel):
    save_experiment_best: int | None = None
    save_trial_best: int | None = None
    save_trial_latest: int | None = None


class PatchExperiment(WireModel):
    """Determined's ``v1PatchExperiment``; a field left out (or null) is left as it is."""

    id: int | None = None
    name: str | None = Field(default=None, max_length=255)
    description: str | None = None
    notes: str | None = None
    labels: list[str] | None = None
    resources: PatchResources | None = None
    checkpoint_storage: PatchCheckpointStorage | None = None


class MoveExperiment(WireModel):
    destination_project_id: int
    experiment_id: int | None = None


class DeleteCheckpoints(WireModel):
    checkpoint_uuids: list[str] = Field(min_length=1)


def _patched_config(row: models.Experiment, body: PatchExperiment) -> dict[str, Any] | None:
    """The experiment's config with the patch's resources and GC policy applied and validated;
    None when the patch changes neither."""
    # exclude_unset: an explicit null (max_slots: none) is a change, a field left out is not.
    resources = body.resources.model_dump(exclude_unset=True) if body.resources else {}
    storage = (
        body.checkpoint_storage.model_dump(exclude_unset=True) if body.checkpoint_storage else {}
    )
    if not resources and not storage:
        return None
    config = dict(row.config)
    config["resources"] = {**config.get("resources", {}), **resources}
    if storage:
        config["checkpoint_storage"] = {**row.checkpoint_storage, **storage}
    try:
        parse_experiment_config(config)
    except ConfigError as exc:
        raise bad_request(f"invalid change: {exc}") from exc
    return config


@experiments_router.patch("/{experiment_id}", **documented(ExperimentCreated, 404))
async def patch_experiment(
    experiment_id: Int64,
    body: PatchExperiment,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    state = master_state(request)

    def write(session: Session) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        row = load_experiment(session, experiment_id)
        check_owner(user, row.owner_id, "experiment")
        config = _patched_config(row, body)
        for field in ("name", "description", "notes"):
            value = getattr(body, field)
            if value is not None:
                setattr(row, field, value)
        if body.labels is not None:
            session.execute(
                delete(models.ExperimentLabel).where(
                    models.ExperimentLabel.experiment_id == experiment_id
                )
            )
            for label in sorted(set(body.labels)):
                session.add(models.ExperimentLabel(experiment_id=experiment_id, label=label))
        if config is not None:
            row.config = config
            if body.checkpoint_storage is not None:
                row.checkpoint_storage = config["checkpoint_storage"]
        session.flush()
        reply = {
            "experiment": views.experiments_json(session, [row], state.clock())[0],
            "config": views.public_config(row.config),
        }
        return config, reply

    config, reply = await state.db.run(write)
    if config is not None:
        _apply_to_live(request, experiment_id, config)
    if config is not None and body.checkpoint_storage is not None:
        # Determined's "set gc-policy" runs GC at once under the new policy.
        collector = engine_of(request).collector
        await collector.collect(experiment_id, config["checkpoint_storage"], final=False)
    return reply


def _apply_to_live(request: Request, experiment_id: int, config: dict[str, Any]) -> None:
    """Give a running experiment its new config (on the event loop, between engine events):
    later runs use it, queued allocations take the new priority, GC the new policy."""
    live = engine_of(request).experiments.get(experiment_id)
    if live is None:
        return
    live.config = parse_experiment_config(config)
    if config.get("checkpoint_storage"):
        live.checkpoint_storage = dict(config["checkpoint_storage"])
    allocations = {t.allocation_id for t in live.trials.values() if t.allocation_id}
    scheduler = master_state(request).scheduler
    for allocation_id in allocations:
        allocation = scheduler.allocations.get(allocation_id)
        if allocation is not None and allocation.state == AllocationState.QUEUED:
            allocation.priority = live.config.resources.priority
            scheduler.capacity.track(allocation)


@experiments_router.delete("/{experiment_id}", **documented(Empty, 404, 409))
async def delete_experiment(
    experiment_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = master_state(request)

    def read(session: Session) -> tuple[dict[str, Any], list[str]]:
        row = load_experiment(session, experiment_id)
        check_owner(user, row.owner_id, "experiment")
        if row.state not in {s.value for s in EXPERIMENT_TERMINAL}:
            raise ApiError(
                409,
                f"experiment {experiment_id} is {row.state}; only ended experiments "
                f"(STATE_COMPLETED, STATE_CANCELED, STATE_ERROR) can be deleted: kill it first "
                f"(det experiment kill {experiment_id})",
            )
        every = list(
            session.scalars(
                select(models.Checkpoint.uuid).where(
                    models.Checkpoint.experiment_id == experiment_id
                )
            )
        )
        _refuse_registered(session, every, f"experiment {experiment_id}")
        uuids = session.scalars(
            select(models.Checkpoint.uuid).where(
                models.Checkpoint.experiment_id == experiment_id,
                models.Checkpoint.state == COMPLETED,
            )
        ).all()
        return row.checkpoint_storage, list(uuids)

    storage, uuids = await state.db.run(read)
    failed = await _delete_files(storage, uuids)
    if failed:
        raise ApiError(
            500,
            f"could not delete {len(failed)} checkpoint(s) of experiment {experiment_id} "
            f"({', '.join(failed[:3])}…); the experiment is kept, try again",
        )

    def remove(session: Session) -> None:
        trial_ids = select(models.Trial.id).where(models.Trial.experiment_id == experiment_id)
        task_ids = list(
            session.scalars(
                select(models.TrialRun.task_id).where(models.TrialRun.trial_id.in_(trial_ids))
            )
        )
        session.execute(delete(models.TaskLog).where(models.TaskLog.task_id.in_(task_ids)))
        session.execute(delete(models.Task).where(models.Task.id.in_(task_ids)))
        session.execute(delete(models.Experiment).where(models.Experiment.id == experiment_id))

    await state.db.run(remove)
    log.info("experiment %d deleted by %s", experiment_id, user.username)
    return {}


def _refuse_registered(session: Session, uuids: list[str], what: str) -> None:
    """409 when a model version registers one of ``uuids``: registered checkpoints are kept."""
    pinned = pinned_checkpoints(session, uuids)
    if not pinned:
        return
    versions = session.execute(
        select(models.RegisteredModel.name, models.ModelVersion.version)
        .join(models.RegisteredModel, models.RegisteredModel.id == models.ModelVersion.model_id)
        .where(models.ModelVersion.checkpoint_uuid.in_(pinned))
        .order_by(models.RegisteredModel.name, models.ModelVersion.version)
    ).all()
    named = ", ".join(f"{name} version {version}" for name, version in versions[:5])
    raise ApiError(
        409,
        f"{what}: checkpoint(s) {', '.join(sorted(pinned)[:3])} are registered in the model "
        f"registry ({named}); delete those model versions first "
        "(det model describe <model> lists them)",
    )


async def _delete_files(storage: dict[str, Any], uuids: list[str]) -> list[str]:
    """Delete each checkpoint's files; returns the uuids that could not be deleted."""
    if not uuids:
        return []
    manager = build_storage(storage)
    failed = []
    for uuid in uuids:
        try:
            await asyncio.to_thread(manager.delete, uuid)
        except Exception as exc:
            log.warning("could not delete checkpoint %s: %s", uuid, exc)
            failed.append(uuid)
    return failed


@experiments_router.post("/{experiment_id}/move", **documented(Empty, 404))
def move_experiment(
    experiment_id: Int64,
    body: MoveExperiment,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    with master_state(request).db.session() as session:
        row = load_experiment(session, experiment_id)
        check_owner(user, row.owner_id, "experiment")
    if body.destination_project_id != ONLY_PROJECT_ID:
        raise not_found(
            f"project {body.destination_project_id} (there is one project here: "
            f"{ONLY_PROJECT_ID}, Uncategorized, which holds every experiment)"
        )
    return {}


@checkpoints_router.delete("", **documented(Empty, 404, 409))
async def delete_checkpoints(
    body: DeleteCheckpoints, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = master_state(request)
    uuids = list(dict.fromkeys(body.checkpoint_uuids))

    def read(session: Session) -> list[tuple[dict[str, Any], list[str]]]:
        """(the experiment's storage, its checkpoints to delete), per experiment."""
        groups: dict[int, tuple[dict[str, Any], list[str]]] = {}
        _refuse_registered(session, uuids, "checkpoints")
        for uuid in uuids:
            checkpoint = session.get(models.Checkpoint, uuid)
            if checkpoint is None:
                raise not_found(f"checkpoint {uuid}")
            experiment = session.get_one(models.Experiment, checkpoint.experiment_id)
            check_owner(user, experiment.owner_id, "checkpoint")
            trial = session.get_one(models.Trial, checkpoint.trial_id)
            unfinished = trial.state not in {s.value for s in TRIAL_TERMINAL}
            if trial.latest_checkpoint == uuid and unfinished:
                raise ApiError(
                    409,
                    f"checkpoint {uuid} is what trial {trial.id} ({trial.state}) would resume "
                    "from; delete it once the trial has ended",
                )
            if checkpoint.state != COMPLETED:
                continue  # already deleted (or never completed): no files to remove
            entry = groups.setdefault(experiment.id, (experiment.checkpoint_storage, []))
            entry[1].append(uuid)
        return list(groups.values())

    deleted: list[str] = []
    failed: list[str] = []
    for storage, group in await state.db.run(read):
        missed = await _delete_files(storage, group)
        failed += missed
        deleted += [u for u in group if u not in missed]
    if deleted:
        await state.db.run(partial(mark_deleted, uuids=deleted))
    if failed:
        raise ApiError(500, f"could not delete checkpoint(s) {', '.join(failed)}; try again")
    return {}


routers = [experiments_router, checkpoints_router]
