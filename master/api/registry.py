"""``/api/v1/models``: Determined's model registry — named models, each with numbered versions
that pin one checkpoint apiece.

Paths, bodies and field names are Determined's (``proto/src/determined/api/v1/model.proto``), so
its CLI (``det model …``) and SDK (``Determined.create_model``, ``Model.register_version``, …)
work unchanged. ``{modelName}`` is a model's name or its numeric id (Determined's CLI asks for
``/models/{id}/versions``), which is why a name may not be only digits.

Who may do what, as for experiments: every signed-in user reads every model; a model's owner
or an admin changes, archives or deletes it and registers versions of it; a version's owner,
its model's owner or an admin changes or deletes the version. A version pins its checkpoint:
checkpoint GC skips it and only ``STATE_COMPLETED`` checkpoints can be registered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.errors import ApiError, bad_request, not_found
from master.api.experiments import check_owner, master_state
from master.api.openapi import documented
from master.api.paging import page, sort_order
from master.api.registry_schemas import (
    ModelLabels,
    ModelList,
    ModelReply,
)
from master.api.schemas import Empty
from master.api.wire import Int64, WireModel, timestamp
from master.api.workspaces import DEFAULT_WORKSPACE_ID

router = APIRouter(prefix="/api/v1")

NAME_MAX = 255
DEFAULT_WORKSPACE_NAME = "Uncategorized"
NUM_VERSIONS = (
    select(func.count(models.ModelVersion.id))
    .where(models.ModelVersion.model_id == models.RegisteredModel.id)
    .correlate(models.RegisteredModel)
    .scalar_subquery()
)
MODEL_SORTS: dict[str, Any] = {
    "SORT_BY_UNSPECIFIED": models.RegisteredModel.id,
    "SORT_BY_NAME": models.RegisteredModel.name,
    "SORT_BY_DESCRIPTION": models.RegisteredModel.description,
    "SORT_BY_CREATION_TIME": models.RegisteredModel.creation_time,
    "SORT_BY_LAST_UPDATED_TIME": models.RegisteredModel.last_updated_time,
    "SORT_BY_NUM_VERSIONS": NUM_VERSIONS,
    "SORT_BY_WORKSPACE": models.RegisteredModel.id,  # one workspace: falls back to id order
}
ID_DIGITS_MAX = 18  # any id of at most 18 digits fits the database's integer types' range


# ---- validation ----------------------------------------------------------------------------------


def check_name(field: str, name: str) -> str:
    """A model name: 1-255 characters, not only digits (a path may name a model by id), no
    ``/`` (it is a path segment), no surrounding whitespace."""
    if not name or name != name.strip():
        raise bad_request(
            f"{field}: {name!r}; a model name is non-empty text without leading "
            "or trailing whitespace"
        )
    if len(name) > NAME_MAX:
        raise bad_request(f"{field}: {len(name)} characters; at most {NAME_MAX} are allowed")
    if name.isdigit():
        raise bad_request(
            f"{field}: {name!r}; a model name may not be only digits (paths "
            "take a model's name or its numeric id)"
        )
    if "/" in name:
        raise bad_request(f"{field}: {name!r}; a model name may not contain '/'")
    return name


def check_labels(field: str, labels: list[str] | None) -> list[str] | None:
    """Labels as given, duplicates dropped; each non-empty and at most 255 characters."""
    if labels is None:
        return None
    for label in labels:
        if not label or len(label) > NAME_MAX:
            raise bad_request(f"{field}: {label!r}; a label is 1 to {NAME_MAX} characters")
    return list(dict.fromkeys(labels))


def check_workspace(workspace_id: int | None, workspace_name: str | None) -> None:
    if workspace_id not in (None, 0, DEFAULT_WORKSPACE_ID):
        raise not_found(
            f"workspace {workspace_id} (the only workspace is {DEFAULT_WORKSPACE_ID},"
            f" {DEFAULT_WORKSPACE_NAME!r})"
        )
    if workspace_name not in (None, "", DEFAULT_WORKSPACE_NAME):
        raise not_found(
            f"workspace {workspace_name!r} (the only workspace is {DEFAULT_WORKSPACE_NAME!r})"
        )


# ---- reading -------------------------------------------------------------------------------------


def load_model(session: Session, identifier: str, *, lock: bool = False) -> models.RegisteredModel:
    """The model named ``identifier``, or with that id when it is all (ASCII) digits."""
    if identifier.isascii() and identifier.isdigit():
        if len(identifier) > ID_DIGITS_MAX:
            raise not_found(f"model {identifier!r}")
        query = select(models.RegisteredModel).where(models.RegisteredModel.id == int(identifier))
    else:
        query = select(models.RegisteredModel).where(models.RegisteredModel.name == identifier)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise not_found(f"model {identifier!r}")
    return row


def usernames(session: Session, ids: set[int]) -> dict[int, str]:
    rows = session.execute(
        select(models.User.id, models.User.username).where(models.User.id.in_(ids))
    )
    return dict(rows.tuples().all())


def models_json(session: Session, rows: list[models.RegisteredModel]) -> list[dict[str, Any]]:
    ids = [m.id for m in rows]
    counts = dict(
        session.execute(
            select(models.ModelVersion.model_id, func.count(models.ModelVersion.id))
            .where(models.ModelVersion.model_id.in_(ids))
            .group_by(models.ModelVersion.model_id)
        )
        .tuples()
        .all()
    )
    names = usernames(session, {m.owner_id for m in rows})
    return [
        {
            "id": m.id,
            "name": m.name,
            "description": m.description,
            "notes": m.notes,
            "metadata": m.metadata_,
            "labels": m.labels,
            "userId": m.owner_id,
            "username": names.get(m.owner_id, ""),
            "archived": m.archived,
            "creationTime": timestamp(m.creation_time),
            "lastUpdatedTime": timestamp(m.last_updated_time),
            "numVersions": counts.get(m.id, 0),
            "workspaceId": DEFAULT_WORKSPACE_ID,
        }
        for m in rows
    ]


@router.get("/models", **documented(ModelList))
def list_models(
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    sort_by: str = Query("SORT_BY_UNSPECIFIED", alias="sortBy"),
    order_by: str = Query("ORDER_BY_ASC", alias="orderBy"),
    name: str = "",
    description: str = "",
    archived: bool | None = None,
    id: Int64 = 0,
    labels: list[str] = Query([]),
    users: list[str] = Query([]),
    user_ids: list[Int64] = Query([], alias="userIds"),
    workspace_ids: list[Int64] = Query([], alias="workspaceIds"),
    workspace_names: list[str] = Query([], alias="workspaceNames"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Models, filtered as Determined filters them: ``name`` and ``description`` match
    case-insensitively anywhere, ``labels`` must all be present, ``users``/``userIds`` name the
    owners."""
    column = MODEL_SORTS.get(sort_by)
    if column is None:
        raise bad_request(f"sortBy: {sort_by!r} is not one of {sorted(MODEL_SORTS)}")
    where: list[Any] = []
    if name:
        where.append(func.lower(models.RegisteredModel.name).contains(name.lower()))
    if description:
        where.append(func.lower(models.RegisteredModel.description).contains(description.lower()))
    if archived is not None:
        where.append(models.RegisteredModel.archived == archived)
    if id:
        where.append(models.RegisteredModel.id == id)
    if users:
        owners = select(models.User.id).where(models.User.username.in_(users))
        where.append(models.RegisteredModel.owner_id.in_(owners))
    if user_ids:
        where.append(models.RegisteredModel.owner_id.in_(user_ids))
    if (workspace_ids and DEFAULT_WORKSPACE_ID not in workspace_ids) or (
        workspace_names and DEFAULT_WORKSPACE_NAME not in workspace_names
    ):
        where.append(models.RegisteredModel.id.is_(None))  # no model is in another workspace
    with master_state(request).db.session() as session:
        if labels:
            wanted = set(labels)
            candidates = session.execute(
                select(models.RegisteredModel.id, models.RegisteredModel.labels).where(*where)
            ).tuples()
            where.append(
                models.RegisteredModel.id.in_([i for i, ls in candidates if wanted <= set(ls)])
            )
        total = session.scalar(
            select(func.count()).select_from(models.RegisteredModel).where(*where)
        )
        window = page(offset, limit, int(total or 0))
        rows = session.scalars(
            select(models.RegisteredModel)
            .where(*where)
            .order_by(*sort_order(column, order_by), models.RegisteredModel.id)
            .offset(window.start)
            .limit(window.count)
        ).all()
        return {"models": models_json(session, list(rows)), "pagination": window.pagination}


@router.get("/models/{model_name}", **documented(ModelReply, 404))
def get_model(
    model_name: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with master_state(request).db.session() as session:
        return {"model": models_json(session, [load_model(session, model_name)])[0]}


@router.get("/model/labels", **documented(ModelLabels))
def model_labels(request: Request, _: models.User = Depends(auth.current_user)) -> dict[str, Any]:
    """Every label any model has, the most used first."""
    with master_state(request).db.session() as session:
        counts = Counter(
            label
            for labels in session.scalars(select(models.RegisteredModel.labels))
            for label in labels
        )
    return {"labels": [label for label, _ in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]}


# ---- changing models -----------------------------------------------------------------------------


class PostModelRequest(WireModel):
    name: str
    description: str | None = None
    notes: str | None = None
    metadata: dict[str, Any] | None = None
    labels: list[str] | None = None
    workspace_id: Int64 | None = None
    workspace_name: str | None = None


class PatchModelRequest(WireModel):
    name: str | None = None
    description: str | None = None
    notes: str | None = None
    metadata: dict[str, Any] | None = None
    labels: list[str] | None = None
    workspace_id: Int64 | None = None
    workspace_name: str | None = None


def _name_taken(session: Session, name: str, model_id: int | None = None) -> None:
    other = session.scalar(
        select(models.RegisteredModel.id).where(models.RegisteredModel.name == name)
    )
    if other is not None and other != model_id:
        raise ApiError(409, f"name: a model named {name!r} already exists (id {other})")


@router.post("/models", **documented(ModelReply, 404, 409))
def create_model(
    body: PostModelRequest, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """Registers a model owned by the caller; its name must be unused."""
    name = check_name("name", body.name)
    labels = check_labels("labels", body.labels) or []
    check_workspace(body.workspace_id, body.workspace_name)
    state = master_state(request)
    with state.db.session() as session:
        _name_taken(session, name)
        now = state.clock()
        row = models.RegisteredModel(
            name=name,
            owner_id=user.id,
            description=body.description or "",
            notes=body.notes or "",
            metadata_=body.metadata or {},
            labels=labels,
            archived=False,
            creation_time=now,
            last_updated_time=now,
        )
        session.add(row)
        session.flush()
        return {"model": models_json(session, [row])[0]}


@router.patch("/models/{model_name}", **documented(ModelReply, 404, 409))
def patch_model(
    model_name: str,
    body: PatchModelRequest,
    request: Request,
    user: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Changes the fields given (``metadata`` and ``labels`` are replaced whole)."""
    labels = check_labels("labels", body.labels)
    check_workspace(body.workspace_id, body.workspace_name)
    state = master_state(request)
    with state.db.session() as session:
        row = load_model(session, model_name, lock=True)
        check_owner(user, row.owner_id, "model")
        if body.name is not None and body.name != row.name:
            _name_taken(session, check_name("name", body.name), row.id)
            row.name = body.name
        if body.description is not None:
            row.description = body.description
        if body.notes is not None:
            row.notes = body.notes
        if body.metadata is not None:
            row.metadata_ = body.metadata
        if labels is not None:
            row.labels = labels
        row.last_updated_time = state.clock()
        session.flush()
        return {"model": models_json(session, [row])[0]}


def _set_archived(request: Request, model_name: str, user: models.User, value: bool) -> None:
    state = master_state(request)
    with state.db.session() as session:
        row = load_model(session, model_name, lock=True)
        check_owner(user, row.owner_id, "model")
        row.archived = value
        row.last_updated_time = state.clock()


@router.post("/models/{model_name}/archive", **documented(Empty, 404))
def archive_model(
    model_name: str, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """An archived model is listed with ``archived`` true and takes no new versions."""
    _set_archived(request, model_name, user, True)
    return {}


@router.post("/models/{model_name}/unarchive", **documented(Empty, 404))
def unarchive_model(
    model_name: str, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    _set_archived(request, model_name, user, False)
    return {}


@router.delete("/models/{model_name}", **documented(Empty, 404))
def delete_model(
    model_name: str, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    """Deletes the model and its versions; their checkpoints stay (GC may take them later)."""
    with master_state(request).db.session() as session:
        row = load_model(session, model_name, lock=True)
        check_owner(user, row.owner_id, "model")
        for version in session.scalars(
            select(models.ModelVersion).where(models.ModelVersion.model_id == row.id)
        ):
            session.delete(version)
        session.delete(row)
    return {}
