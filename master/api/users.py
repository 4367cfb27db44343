"""``/api/v1/users``: list, get, create, patch, set password. Only admins manage other users.

Changing a user or a password needs a user session (``auth.session_user``): no task token may.
Names follow ``master.identity``; a password change revokes the user's other sessions and
proxy cookies and downgrades their task tokens to report-only (``auth.revoke_user_credentials``).
The last active admin can be neither demoted nor deactivated.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from master import auth, identity, models
from master.api.errors import ApiError, bad_request, forbidden, not_found
from master.api.openapi import documented
from master.api.schemas import UserList, UserReply
from master.api.wire import Int64, WireModel, pagination, user_json
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


def _checked(check: Any, *args: Any) -> Any:
    """Run an identity check, turning its refusal into a 400 naming the rule."""
    try:
        return check(*args)
    except identity.IdentityError as exc:
        raise bad_request(str(exc)) from exc


def _set_password(user: models.User, password: str, *, is_hashed: bool, field: str) -> None:
    """Store a new password; a plain one must meet the policy (a hashed one cannot be checked)."""
    if not is_hashed:
        _checked(identity.check_password, password, field)
    user.password_hash = auth.hash_password(password, is_hashed=is_hashed)


def _name_taken(session: Session, username: str, user_id: int | None = None) -> bool:
    """Whether another user has this name, compared case-insensitively (rows from before the
    canonical form was enforced may differ in case)."""
    query = select(models.User.id).where(func.lower(models.User.username) == username)
    if user_id is not None:
        query = query.where(models.User.id != user_id)
    return session.scalar(query.limit(1)) is not None


def _check_last_admin(session: Session, user: models.User, body: PatchUserRequest) -> None:
    """Refuse (409) to demote or deactivate the last active admin."""
    demoting = body.admin is False and user.admin
    deactivating = body.active is False and user.active
    if not (user.admin and user.active and (demoting or deactivating)):
        return
    others = session.scalar(
        select(func.count())
        .select_from(models.User)
        .where(models.User.admin.is_(True), models.User.active.is_(True), models.User.id != user.id)
    )
    if not others:
        what = "demoted" if demoting else "deactivated"
        raise ApiError(
            409,
            f"user '{user.username}' is the last active admin and cannot be {what}: "
            "make another user an admin first",
        )


@router.get("", **documented(UserList))
def list_users(
    request: Request,
    offset: Int64 = Query(0, ge=0),
    limit: Int64 = Query(0, ge=0),
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
        pattern = identity.like_pattern(name.lower())
        query = query.where(
            or_(
                func.lower(models.User.username).like(pattern, escape="\\"),
                func.lower(models.User.display_name).like(pattern, escape="\\"),
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


@router.get("/{username}/by-username", **documented(UserReply, 404))
def get_user_by_username(
    username: str, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with _state(request).db.session() as session:
        user = session.scalars(
            select(models.User).where(models.User.username == identity.normalize_username(username))
        ).one_or_none()
        if user is None:
            raise not_found("user")
        return {"user": user_json(user)}


@router.get("/{user_id}", **documented(UserReply, 404))
def get_user(
    user_id: Int64, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    with _state(request).db.session() as session:
        return {"user": user_json(_get(session, user_id))}


@router.post("", **documented(UserReply, 409))
def create_user(
    body: PostUserRequest, request: Request, _: models.User = Depends(auth.admin_user)
) -> dict[str, Any]:
    """A new user, who must get a password: a plain one must meet ``identity.check_password``;
    one sent salted and hashed (``isHashed``, what Determined's CLI sends) cannot be checked."""
    state = _state(request)
    if not body.password:
        raise bad_request(
            f"password: a new user needs a password ({identity.PASSWORD_RULE}); "
            "only the built-in admin and determined users start blank"
        )
    username = _checked(identity.check_username, body.user.username, "user.username")
    display_name = _checked(identity.check_display_name, body.user.display_name, "user.displayName")
    now = state.clock()
    try:
        with state.db.session() as session:
            if _name_taken(session, username):
                raise ApiError(409, f"user '{username}' already exists")
            user = models.User(
                username=username,
                admin=body.user.admin,
                active=body.user.active,
                display_name=display_name,
                remote=body.user.remote,
                password_hash=None,
                created_at=now,
                modified_at=now,
            )
            _set_password(user, body.password, is_hashed=body.is_hashed, field="password")
            session.add(user)
            session.flush()
            return {"user": user_json(user)}
    except IntegrityError as exc:
        raise ApiError(409, f"user '{username}' already exists") from exc


@router.patch("/{user_id}", **documented(UserReply, 404, 409))
def patch_user(
    user_id: Int64,
    body: PatchUserRequest,
    request: Request,
    caller: auth.Caller = Depends(auth.session_user),
) -> dict[str, Any]:
    state = _state(request)
    own_fields = {"display_name", "password", "is_hashed"}
    changing = body.model_fields_set - {"is_hashed"}
    if not caller.user.admin and (caller.user.id != user_id or not changing <= own_fields):
        raise forbidden(
            f"user '{caller.user.username}' is not an admin: non-admins may only change their "
            "own displayName and password"
        )
    username = (
        None
        if body.username is None
        else _checked(identity.check_username, body.username, "username")
    )
    display_name = _checked(identity.check_display_name, body.display_name)
    try:
        with state.db.session() as session:
            user = _get(session, user_id)
            _check_last_admin(session, user, body)
            if username is not None:
                if _name_taken(session, username, user.id):
                    raise ApiError(409, f"user '{username}' already exists")
                user.username = username
            if "display_name" in body.model_fields_set:
                user.display_name = display_name
            if body.admin is not None:
                user.admin = body.admin
            if body.active is not None:
                user.active = body.active
            if body.remote is not None:
                user.remote = body.remote
            if body.password is not None:
                _set_password(user, body.password, is_hashed=body.is_hashed, field="password")
                _revoke_after_password_change(session, request, caller, user)
            user.modified_at = state.clock()
            session.flush()
            return {"user": user_json(user)}
    except IntegrityError as exc:
        raise ApiError(409, f"user '{username}' already exists") from exc


def _revoke_after_password_change(
    session: Session, request: Request, caller: auth.Caller, user: models.User
) -> None:
    """Revoke the user's other sessions and task credentials; a user changing their own
    password keeps the session they did it with."""
    own = auth.request_token(request) if caller.user.id == user.id else None
    auth.revoke_user_credentials(session, user.id, keep_token=own)


@router.post("/{user_id}/password", **documented(UserReply, 404))
def set_password(
    user_id: Int64,
    request: Request,
    body: str | PasswordRequest = Body(...),
    caller: auth.Caller = Depends(auth.session_user),
) -> dict[str, Any]:
    """Body: a bare JSON string (Determined's wire form, always plain text) or ``{password,
    isHashed}``."""
    if not caller.user.admin and caller.user.id != user_id:
        raise forbidden(
            f"user '{caller.user.username}' is not an admin: only admins change other users' "
            "passwords"
        )
    password, is_hashed = (
        (body, False) if isinstance(body, str) else (body.password, body.is_hashed)
    )
    state = _state(request)
    with state.db.session() as session:
        user = _get(session, user_id)
        _set_password(user, password, is_hashed=is_hashed, field="password")
        _revoke_after_password_change(session, request, caller, user)
        user.modified_at = state.clock()
        session.flush()
        return {"user": user_json(user)}
