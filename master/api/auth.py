"""``/api/v1/auth/login``, ``/api/v1/auth/logout``, ``/api/v1/me``.

Login runs on the event loop and hands its two slow parts elsewhere: the database to the usual
worker threads, the password check to :class:`master.login_guard.LoginGuard`'s own pool, behind
its rate limits (see that module).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from master import auth, identity, models
from master.api.errors import ApiError
from master.api.openapi import documented
from master.api.schemas import Empty, LoginReply, UserReply
from master.api.wire import WireModel, user_json
from master.login_guard import LoginGuard
from master.state import MasterState

router = APIRouter(prefix="/api/v1")
SESSION_COOKIE_PATH = "/api"


class LoginRequest(WireModel):
    username: str
    password: str = ""
    is_hashed: bool = False


def _find_user(session: Session, username: str) -> models.User | None:
    return session.scalars(
        select(models.User).where(models.User.username == username)
    ).one_or_none()


def _open_session(session: Session, user_id: int, state: MasterState) -> dict[str, Any]:
    now = state.clock()
    user = session.get_one(models.User, user_id)
    user.last_auth_at = now
    token = auth.issue_token(session, user.id, state.config.token_lifetime, now)
    return {"token": token, "user": user_json(user)}


@router.post("/auth/login", **documented(LoginReply, 429, 503))
async def login(body: LoginRequest, request: Request) -> JSONResponse:
    state: MasterState = request.app.state.master
    guard: LoginGuard = request.app.state.login_guard
    username = identity.normalize_username(body.username)
    client = request.client.host if request.client else "unknown"
    with guard.attempt(username, client) as attempt:
        user = await state.db.run(partial(_find_user, username=username))
        if not await guard.check(user, body.password, is_hashed=body.is_hashed) or user is None:
            # Determined answers PermissionDenied with exactly this message; its CLI keys on it.
            raise ApiError(403, "invalid credentials")
        attempt.succeeded = True
    if not user.active:
        raise ApiError(403, f"user '{user.username}' is deactivated")
    payload = await state.db.run(partial(_open_session, user_id=user.id, state=state))
    payload["csrfToken"] = auth.csrf_token(payload["token"])
    response = JSONResponse(payload)
    # For the console: only /api sees it (never a task's pages under /proxy/), never sent from
    # another site, and useless without the CSRF header (master.auth).
    response.set_cookie(
        auth.SESSION_COOKIE,
        payload["token"],
        path=SESSION_COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=int(state.config.token_lifetime.total_seconds()),
    )
    return response


@router.post("/auth/logout", **documented(Empty))
def logout(request: Request, _: models.User = Depends(auth.current_user)) -> JSONResponse:
    state: MasterState = request.app.state.master
    token = auth.request_token(request)
    if token:
        with state.db.session() as session:
            auth.revoke_token(session, token)
    response = JSONResponse({})
    response.delete_cookie(
        auth.SESSION_COOKIE,
        path=SESSION_COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/me", **documented(UserReply))
def me(user: models.User = Depends(auth.current_user)) -> dict[str, Any]:
    return {"user": user_json(user)}
