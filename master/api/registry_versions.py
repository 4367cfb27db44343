"""``/api/v1/models/{modelName}/versions``: a registered model's numbered versions (1, 2, …), each
pinning one completed checkpoint (Determined's ``v1ModelVersion``).

A version's owner, its model's owner or an admin changes or deletes it; registering a version
is changing the model (its owner or an admin). See :mod:`master.api.registry` for the rest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.errors import ApiError, bad_request, not_found
from master.api.experiments import check_owner, master_state
from master.api.openapi import documented
from master.api.paging import page, sort_order
from master.api.registry import check_labels, load_model, models_json, usernames
from master.api.registry_schemas import ModelVersionList, ModelVersionReply
from master.api.schemas import Empty
from master.api.wire import Int64, WireModel, timestamp
from master.experiments import views

router = APIRouter(prefix="/api/v1")

COMPLETED = "STATE_COMPLETED"
VERSION_SORTS: dict[str, Any] = {
    "SORT_BY_UNSPECIFIED": models.ModelVersion.version,
    "SORT_BY_VERSION": models.ModelVersion.version,
    "SORT_BY_CREATION_TIME": models.ModelVersion.creation_time,
}


def load_version(
    session: Session, model: models.RegisteredModel, version: int
) -> models.ModelVersion:
    row = session.scalars(
        select(models.ModelVersion).where(
            models.ModelVersion.model_id == model.id, models.ModelVersion.version == version
        )
    ).one_or_none()
    if row is None:
        raise not_found(f"version {version} of model {model.name!r}")
    return row


def versions_json(
    session: Session, model: models.RegisteredModel, rows: list[models.ModelVersion]
) -> list[dict[str, Any]]:
    model_json = models_json(session, [model])[0]
    checkpoints = {
        c["uuid"]: c
        for c in views.checkpoints_json(
            session,
            session.scalars(
                select(models.Checkpoint).where(
                    models.Checkpoint.uuid.in_({v.checkpoint_uuid for v in rows})
                )
            ).all(),
        )
    }
    names = usernames(session, {v.owner_id for v in rows})
    return [
        {
            "id": v.id,
            "version": v.version,
            "model": model_json,
            "checkpoint": checkpoints[v.checkpoint_uuid],
            "name": v.name,
            "comment": v.comment,
            "notes": v.notes,
            "metadata": v.metadata_,
            "labels": v.labels,
            "userId": v.owner_id,
            "username": names.get(v.owner_id, ""),
            "creationTime": timestamp(v.creation_time),
            "lastUpdatedTime": timestamp(v.last_updated_time),
        }
        for v in rows
    ]


class PostModelVersionRequest(WireModel):
    model_name: str | None = None
    checkpoint_uuid: str
    name: str | None = None
    comment: str | None = None
    notes: str | None = None
    metadata: dict[str, Any] | None = None
    labels: list[str] | None = None


class PatchModelVersionRequest(WireModel):
    checkpoint: dict[str, Any] | None = None
    name: str | None = None
    comment: str | None = None
    notes: str | None = None
    metadata: dict[str, Any] | None = None
    labels: list[str] | None = None


@router.get("/models/{model_name}/versions", **documented(ModelVersionList, 404))
def list_versions(
    model_name: str,
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    sort_by: str = Query("SORT_BY_UNSPECIFIED", alias="sortBy"),
    order_by: str = Query("ORDER_BY_ASC", alias="orderBy"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    column = VERSION_SORTS.get(sort_by)
    if column is None:
        raise bad_request(f"sortBy: {sort_by!r} is not one of {sorted(VERSION_SORTS)}")
    with master_state(request).db.session() as session:
        model = load_model(session, model_name)
        where = [models.ModelVersion.model_id == model.id]
        total = session.scalar(select(func.count()).select_from(models.ModelVersion).where(*where))
        window = page(offset, limit, int(total or 0))
        rows = session.scalars(
            select(models.ModelVersion)
            .where(*where)
            .order_by(*sort_order(column, order_by), models.ModelVersion.version)
            .offset(window.start)
            .limit(window.count)
        ).all()
        return {
            "model": models_json(session, [model])[0],
            "modelVersions": versions_json(session, model, list(rows)),
            "pagination": window.pagination,
        }


@router.post("/models/{model_name}/versions", **documented(ModelVersionReply, 404, 409))
def register_version(
    model_name: str,
    body: PostModelVersionRequest,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Registers a completed checkpoint as the model's next version (1, 2, …)."""
    labels = check_labels("labels", body.labels) or []
    state = master_state(request)
    with state.db.session() as session:
        model = load_model(session, model_name, lock=True)
        if body.model_name not in (None, "", model.name, str(model.id)):
            raise bad_request(
                f"modelName: {body.model_name!r} in the body differs from the path's model "
                f"{model.name!r}"
            )
        check_owner(user, model.owner_id, "model")
        if model.archived:
            raise ApiError(
                409, f"model {model.name!r} is archived: unarchive it to register versions"
            )
        checkpoint = session.get(models.Checkpoint, body.checkpoint_uuid)
        if checkpoint is None:
            raise not_found(f"checkpoint {body.checkpoint_uuid}")
        if checkpoint.state != COMPLETED:
            raise ApiError(
                409,
                f"checkpoint {checkpoint.uuid} is {checkpoint.state}: only "
                f"{COMPLETED} checkpoints can be registered",
            )
        latest = session.scalar(
            select(func.max(models.ModelVersion.version)).where(
                models.ModelVersion.model_id == model.id
            )
        )
        now = state.clock()
        row = models.ModelVersion(
            model_id=model.id,
            version=int(latest or 0) + 1,
            checkpoint_uuid=checkpoint.uuid,
            owner_id=user.id,
            name=body.name or "",
            comment=body.comment or "",
            notes=body.notes or "",
            metadata_=body.metadata or {},
            labels=labels,
            creation_time=now,
            last_updated_time=now,
        )
        session.add(row)
        model.last_updated_time = now
        session.flush()
        return {"modelVersion": versions_json(session, model, [row])[0]}


@router.get("/models/{model_name}/versions/{version}", **documented(ModelVersionReply, 404))
def get_version(
    model_name: str, version: Int64, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with master_state(request).db.session() as session:
        model = load_model(session, model_name)
        row = load_version(session, model, version)
        return {"modelVersion": versions_json(session, model, [row])[0]}


def _check_version_owner(
    user: models.User, model: models.RegisteredModel, row: models.ModelVersion
) -> None:
    if user.id not in (row.owner_id, model.owner_id):
        check_owner(user, row.owner_id, "model version")


@router.patch("/models/{model_name}/versions/{version}", **documented(ModelVersionReply, 404))
def patch_version(
    model_name: str,
    version: Int64,
    body: PatchModelVersionRequest,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Changes the fields given; a version's checkpoint never changes (register a new
    version instead)."""
    labels = check_labels("labels", body.labels)
    state = master_state(request)
    with state.db.session() as session:
        model = load_model(session, model_name)
        row = load_version(session, model, version)
        _check_version_owner(user, model, row)
        if body.checkpoint is not None and body.checkpoint.get("uuid") != row.checkpoint_uuid:
            raise bad_request(
                "checkpoint: a version's checkpoint cannot change; register the new checkpoint "
                "as a new version"
            )
        for field in ("name", "comment", "notes"):
            value = getattr(body, field)
            if value is not None:
                setattr(row, field, value)
        if body.metadata is not None:
            row.metadata_ = body.metadata
        if labels is not None:
            row.labels = labels
        now: datetime = state.clock()
        row.last_updated_time = now
        session.flush()
        return {"modelVersion": versions_json(session, model, [row])[0]}


@router.delete("/models/{model_name}/versions/{version}", **documented(Empty, 404))
def delete_version(
    model_name: str,
    version: Int64,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Deletes the version; its checkpoint is no longer pinned by it."""
    with master_state(request).db.session() as session:
        model = load_model(session, model_name, lock=True)
        row = load_version(session, model, version)
        _check_version_owner(user, model, row)
        session.delete(row)
    return {}
