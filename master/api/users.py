"""``/api/v1/users``: list, get, create, patch, set password. Only admins manage other users."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from master import auth, models
from master.api.errors import ApiError, bad_request, forbidden, not_found
from master.api.wire import WireModel, pagination, user_json
from master.state import MasterState

router = APIRouter(prefix="/api/v1/users")

SortBy = Literal[
    "SORT_BY_UNSPECIFIED",
    "SORT_BY_DISPLAY_NAME",
    "SORT_BY_USER_NAME",
    "SORT_BY_ADMIN",
    "SORT_BY_ACTIVE",
    "SORT_BY_MODIFIED_TIME",
    "SORT_BY_NAME",
    "SORT_BY_LAST_AUTH_TIME",
    "SORT_BY_REMOTE",
]
_SORT_COLUMNS = {
    "SORT_BY_DISPLAY_NAME": models.User.display_name,
    "SORT_BY_USER_NAME": models.User.username,
    "SORT_BY_NAME": models.User.username,
    "SORT_BY_ADMIN": models.User.admin,
    "SORT_BY_ACTIVE": models.User.active,
    "SORT_BY_MODIFIED_TIME": models.User.modified_at,
    "SORT_BY_LAST_AUTH_TIME": models.User.last_auth_at,
    "SORT_BY_REMOTE": models.User.remote,
}


class NewUser(WireModel):
    username: str
    admin: bool = False
    active: bool = True
    display_name: str | None = None
    remote: bool = False
    agent_user_group: dict[str, Any] | None = None
    id: int | None = None
    modified_at: str | None = None
    last_auth_at: str | None = None


class PostUserRequest(WireModel):
    user: NewUser
    password: str | None = None
    is_hashed: bool = False


class PatchUserRequest(WireModel):
    username: str | None = None
    display_name: str | None = None
    admin: bool | None = None
    active: bool | None = None
    password: str | None = None
    is_hashed: bool = False
    remote: bool | None = None
    agent_user_group: dict[str, Any] | None = None


class PasswordRequest(WireModel):
    password: str
    is_hashed: bool = False
    user_id: int | None = None


def _state(request: Request) -> MasterState:
    state: MasterState = request.app.state.master
    return state


def _get(session: Session, user_id: int) -> models.User:
    user = session.get(models.User, user_id)
    if user is None:
        raise not_found(f"user {user_id}")
    return user


def _check_username(username: str) -> str:
    username = username.strip()
    if not username:
        raise bad_request("user.username: must not be empty")
    if len(username) > 255 or any(c.isspace() for c in username):
        raise bad_request("user.username: at most 255 characters and no whitespace")
    return username


@router.get("")
def list_users(
    request: Request,
    offset: int = Query(0, ge=0),
    limit: int = Query(0, ge=0),
    sort_by: SortBy = Query("SORT_BY_UNSPECIFIED", alias="sortBy"),
    order_by: Literal["ORDER_BY_UNSPECIFIED", "ORDER_BY_ASC", "ORDER_BY_DESC"] = Query(
        "ORDER_BY_UNSPECIFIED", alias="orderBy"
    ),
    name: str | None = None,
    active: bool | None = None,
    admin: bool | None = None,
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    query = select(models.User)
    if name:
        pattern = f"%{name.lower()}%"
        query = query.where(
            or_(
                func.lower(models.User.username).like(pattern),
                func.lower(models.User.display_name).like(pattern),
            )
        )
    if active is not None:
        query = query.where(models.User.active == active)
    if admin is not None:
        query = query.where(models.User.admin == admin)
    column = _SORT_COLUMNS.get(sort_by, models.User.id)
    query = query.order_by(column.desc() if order_by == "ORDER_BY_DESC" else column.asc())
    with _state(request).db.session() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        page = pagination(offset, limit, total)
        query = query.offset(page["startIndex"])
        if limit:
            query = query.limit(limit)
        users = [user_json(u) for u in session.scalars(query)]
    return {"users": users, "pagination": page}


@router.get("/{username}/by-username")
def get_user_by_username(
    username: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with _state(request).db.session() as session:
        user = session.scalars(
            select(models.User).where(models.User.username == username)
        ).one_or_none()
        if user is None:
            raise not_found("user")
        return {"user": user_json(user)}


@router.get("/{user_id}")
def get_user(
    user_id: int, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with _state(request).db.session() as session:
        return {"user": user_json(_get(session, user_id))}


@router.post("")
def create_user(
    body: PostUserRequest, request: Request, _: models.User = Depends(auth.admin_user)
) -> dict[str, Any]:
    state = _state(request)
    username = _check_username(body.user.username)
    now = state.clock()
    password_hash = auth.hash_password(body.password or "", is_hashed=body.is_hashed)
    try:
        with state.db.session() as session:
            user = models.User(
                username=username,
                admin=body.user.admin,
                active=body.user.active,
                display_name=body.user.display_name,
                remote=body.user.remote,
                password_hash=password_hash,
                created_at=now,
                modified_at=now,
            )
            session.add(user)
            session.flush()
            return {"user": user_json(user)}
    except IntegrityError as exc:
        raise ApiError(409, f"user '{username}' already exists") from exc


@router.patch("/{user_id}")
def patch_user(
    user_id: int,
    body: PatchUserRequest,
    request: Request,
    caller: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    state = _state(request)
    own_fields = {"display_name", "password", "is_hashed"}
    changing = body.model_fields_set - {"is_hashed"}
    if not caller.admin and (caller.id != user_id or not changing <= own_fields):
        raise forbidden(
            f"user '{caller.username}' is not an admin: non-admins may only change their own "
            "displayName and password"
        )
    try:
        with state.db.session() as session:
            user = _get(session, user_id)
            if body.username is not None:
                user.username = _check_username(body.username)
            if "display_name" in body.model_fields_set:
                user.display_name = body.display_name
            if body.admin is not None:
                user.admin = body.admin
            if body.active is not None:
                user.active = body.active
            if body.remote is not None:
                user.remote = body.remote
            if body.password is not None:
                user.password_hash = auth.hash_password(body.password, is_hashed=body.is_hashed)
                auth.revoke_login_tokens(session, user.id)
            user.modified_at = state.clock()
            session.flush()
            return {"user": user_json(user)}
    except IntegrityError as exc:
        raise ApiError(409, f"user '{body.username}' already exists") from exc


@router.post("/{user_id}/password")
def set_password(
    user_id: int,
    request: Request,
    body: str | PasswordRequest = Body(...),
    caller: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Body: a bare JSON string (Determined's wire form, always plain text) or ``{password,
    isHashed}``."""
    if not caller.admin and caller.id != user_id:
        raise forbidden(
            f"user '{caller.username}' is not an admin: only admins change other users' passwords"
        )
    password, is_hashed = (
        (body, False) if isinstance(body, str) else (body.password, body.is_hashed)
    )
    state = _state(request)
    with state.db.session() as session:
        user = _get(session, user_id)
        user.password_hash = auth.hash_password(password, is_hashed=is_hashed)
        auth.revoke_login_tokens(session, user.id)
        user.modified_at = state.clock()
        session.flush()
        return {"user": user_json(user)}
