"""Passwords, bearer tokens, and the request dependencies that check them.

Passwords are stored as argon2 hashes of Determined's *salted* form (sha512 of a fixed salt +
password; a blank password stays blank): Determined's CLI only ever sends that form (``isHashed:
true``) and curl recipes send the plain one, so the master salts plain passwords itself and both
log in. A blank password is stored as NULL and matches only an empty password.

Tokens are 32 random bytes, shown once; the database keeps their SHA-256 and an expiry. Task
allocations get their own tokens, deleted when the allocation ends.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from harness.client import salted_password
from master import models
from master.api.errors import ApiError

_hasher = PasswordHasher()
SESSION_COOKIE = "auth"


def hash_password(password: str, *, is_hashed: bool) -> str | None:
    """The stored form of a password given plain or already salted-and-hashed."""
    salted = password if is_hashed else salted_password(password)
    if salted == "":
        return None
    return _hasher.hash(salted)


def check_password(user: models.User, password: str, *, is_hashed: bool) -> bool:
    salted = password if is_hashed else salted_password(password)
    if user.password_hash is None:
        return salted == ""
    try:
        return _hasher.verify(user.password_hash, salted)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session,
    user_id: int,
    lifetime: timedelta,
    now: datetime,
    allocation_id: str | None = None,
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        models.UserSession(
            user_id=user_id,
            token_hash=token_digest(token),
            allocation_id=allocation_id,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def revoke_token(session: Session, token: str) -> None:
    session.execute(
        delete(models.UserSession).where(models.UserSession.token_hash == token_digest(token))
    )


def revoke_allocation_tokens(session: Session, allocation_id: str) -> None:
    session.execute(
        delete(models.UserSession).where(models.UserSession.allocation_id == allocation_id)
    )


def revoke_login_tokens(session: Session, user_id: int) -> None:
    """Log a user out everywhere (after a password change); task tokens keep working."""
    session.execute(
        delete(models.UserSession).where(
            models.UserSession.user_id == user_id, models.UserSession.allocation_id.is_(None)
        )
    )


def user_for_token(session: Session, token: str, now: datetime) -> models.User | None:
    row = session.execute(
        select(models.User, models.UserSession.expires_at)
        .join(models.UserSession, models.UserSession.user_id == models.User.id)
        .where(models.UserSession.token_hash == token_digest(token))
    ).first()
    if row is None or row[1] <= now or not row[0].active:
        return None
    return row[0]


def allocation_of_token(session: Session, token: str, now: datetime) -> str | None:
    """The allocation a task token belongs to (None for login tokens and unknown tokens)."""
    row = session.execute(
        select(models.UserSession.allocation_id, models.UserSession.expires_at).where(
            models.UserSession.token_hash == token_digest(token)
        )
    ).first()
    if row is None or row[1] <= now:
        return None
    return row[0]


def request_token(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def current_user(request: Request) -> models.User:
    """The authenticated caller, or 401. Runs in the thread pool (sync dependency)."""
    token = request_token(request)
    if token is None:
        raise ApiError(401, "authentication required: log in with `det user login`")
    state = request.app.state.master
    with state.db.session() as session:
        user = user_for_token(session, token, state.clock())
    if user is None:
        raise ApiError(401, "invalid or expired token: log in again with `det user login`")
    return user


def admin_user(user: models.User = Depends(current_user)) -> models.User:
    if not user.admin:
        raise ApiError(403, f"user '{user.username}' is not an admin: this action needs an admin")
    return user
