"""``/api/v1/auth/login``, ``/api/v1/auth/logout``, ``/api/v1/me``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from master import auth, models
from master.api.errors import ApiError
from master.api.wire import WireModel, user_json
from master.state import MasterState

router = APIRouter(prefix="/api/v1")


class LoginRequest(WireModel):
    username: str
    password: str = ""
    is_hashed: bool = False


@router.post("/auth/login")
def login(body: LoginRequest, request: Request) -> JSONResponse:
    state: MasterState = request.app.state.master
    now = state.clock()
    with state.db.session() as session:
        user = session.scalars(
            select(models.User).where(models.User.username == body.username)
        ).one_or_none()
        if user is None or not auth.check_password(user, body.password, is_hashed=body.is_hashed):
            # Determined answers PermissionDenied with exactly this message; its CLI keys on it.
            raise ApiError(403, "invalid credentials")
        if not user.active:
            raise ApiError(403, f"user '{user.username}' is deactivated")
        user.last_auth_at = now
        token = auth.issue_token(session, user.id, state.config.token_lifetime, now)
        payload = {"token": token, "user": user_json(user)}
    response = JSONResponse(payload)
    response.set_cookie(
        auth.SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        max_age=int(state.config.token_lifetime.total_seconds()),
    )
    return response


@router.post("/auth/logout")
def logout(request: Request, _: models.User = Depends(auth.current_user)) -> JSONResponse:
    state: MasterState = request.app.state.master
    token = auth.request_token(request)
    if token:
        with state.db.session() as session:
            auth.revoke_token(session, token)
    response = JSONResponse({})
    response.delete_cookie(auth.SESSION_COOKIE)
    return response


@router.get("/me")
def me(user: models.User = Depends(auth.current_user)) -> dict[str, Any]:
    return {"user": user_json(user)}
