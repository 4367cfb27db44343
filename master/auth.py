"""Passwords, bearer tokens, and the request dependencies that check them.

Passwords are stored as argon2 hashes of Determined's *salted* form (sha512 of a fixed salt +
password; a blank password stays blank): Determined's CLI only ever sends that form (``isHashed:
true``) and curl recipes send the plain one, so the master salts plain passwords itself and both
log in. A blank password is stored as NULL and matches only an empty password.

Tokens are 32 random bytes, shown once; the database keeps their SHA-256, an expiry and a scope:

- ``login``: a user session (``det user login``). The only scope that may change a password, a
  user, an admin flag or a token, or call an admin route.
- ``task``: bound to one allocation and deleted when it ends. A trial's token is *report-only*:
  it reports for its own trial and allocation and reads its own experiment, trials and
  checkpoints, nothing else. A command's, notebook's, shell's or TensorBoard's token also *acts
  as its owner* for ordinary work (create experiments and commands, read logs) until the owner's
  password changes, which downgrades it to report-only.
- ``proxy``: the cookie a redeemed proxy ticket becomes; it opens ``/proxy/<task>/`` of that one
  task and is refused everywhere else (never on ``/api/v1``).

The dependencies below enforce this for every route: :func:`current_caller` (who, with what
scope), :func:`current_user` (ordinary work), :func:`session_user` (user and password changes)
and :func:`admin_user` (admin routes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from harness.client import salted_password
from master import models, token_cache
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


LOGIN = "login"
TASK = "task"
PROXY = "proxy"
NEEDS_SESSION = "needs a user session: log in with `det user login`"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session,
    user_id: int,
    lifetime: timedelta,
    now: datetime,
    allocation_id: str | None = None,
    *,
    acts_as_owner: bool = False,
    proxy_task_id: str | None = None,
    token: str | None = None,
) -> str:
    """A new token of ``user_id``: a ``task`` token when ``allocation_id`` is given (acting as
    the owner only with ``acts_as_owner``), a ``proxy`` token for ``/proxy/<proxy_task_id>/``
    when that is given, else a ``login`` session. ``token``: the secret to store (one made by
    :func:`new_token` before the transaction), else a fresh one."""
    if allocation_id is not None and proxy_task_id is not None:
        raise ValueError("a token is bound to an allocation or to a proxied task, not both")
    scope = TASK if allocation_id is not None else PROXY if proxy_task_id is not None else LOGIN
    token = token or new_token()
    session.add(
        models.UserSession(
            user_id=user_id,
            token_hash=token_digest(token),
            scope=scope,
            allocation_id=allocation_id,
            task_id=proxy_task_id,
            acts_as_owner=scope == TASK and acts_as_owner,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def new_token() -> str:
    return secrets.token_urlsafe(32)


def revoke_token(session: Session, token: str) -> None:
    token_cache.invalidate(session)
    session.execute(
        delete(models.UserSession).where(models.UserSession.token_hash == token_digest(token))
    )


def revoke_allocation_tokens(session: Session, allocation_ids: str | list[str]) -> None:
    """Delete the task tokens of these allocations (only their cached checks are forgotten)."""
    ids = [allocation_ids] if isinstance(allocation_ids, str) else allocation_ids
    if not ids:
        return
    token_cache.invalidate(session, frozenset(ids))
    session.execute(
        delete(models.UserSession)
        .where(models.UserSession.allocation_id.in_(ids))
        .execution_options(**{token_cache.HANDLED: True})
    )


def revoke_user_credentials(session: Session, user_id: int, keep_token: str | None = None) -> None:
    """After a password change: delete every login session and proxy cookie of the user except
    ``keep_token`` (the caller's own session when they changed their own password), and
    downgrade every task token of the user to report-only, so running work goes on reporting
    but no task token can act as the user any more."""
    token_cache.invalidate(session)
    query = delete(models.UserSession).where(
        models.UserSession.user_id == user_id, models.UserSession.scope != TASK
    )
    if keep_token is not None:
        query = query.where(models.UserSession.token_hash != token_digest(keep_token))
    session.execute(query)
    session.execute(
        update(models.UserSession)
        .where(models.UserSession.user_id == user_id, models.UserSession.scope == TASK)
        .values(acts_as_owner=False)
    )


@dataclass(frozen=True)
class Caller:
    """Who is calling and with what kind of token."""

    user: models.User
    scope: str  # LOGIN, TASK or PROXY
    allocation_id: str | None = None  # TASK tokens
    task_id: str | None = None  # PROXY tokens: the one task whose proxy the cookie opens
    acts_as_owner: bool = False  # TASK tokens that may act as their owner
    expires_at: datetime = datetime.max  # the token's

    @property
    def is_session(self) -> bool:
        return self.scope == LOGIN

    @property
    def report_only(self) -> bool:
        return self.scope == TASK and not self.acts_as_owner


def caller_for_token(session: Session, token: str, now: datetime) -> Caller | None:
    """The caller a token stands for (None if unknown, expired or its user is deactivated)."""
    row = session.execute(
        select(models.User, models.UserSession)
        .join(models.UserSession, models.UserSession.user_id == models.User.id)
        .where(models.UserSession.token_hash == token_digest(token))
    ).first()
    if row is None:
        return None
    user, stored = row
    if stored.expires_at <= now or not user.active:
        return None
    return Caller(
        user=user,
        scope=stored.scope,
        allocation_id=stored.allocation_id,
        task_id=stored.task_id,
        acts_as_owner=stored.acts_as_owner,
        expires_at=stored.expires_at,
    )


def user_for_token(session: Session, token: str, now: datetime) -> models.User | None:
    """The user of a ``login`` or ``task`` token (never of a proxy cookie)."""
    found = caller_for_token(session, token, now)
    return None if found is None or found.scope == PROXY else found.user


def allocation_of_token(session: Session, token: str, now: datetime) -> str | None:
    """The allocation a task token belongs to (None for any other or unknown token)."""
    row = session.execute(
        select(models.UserSession.allocation_id, models.UserSession.expires_at).where(
            models.UserSession.token_hash == token_digest(token),
            models.UserSession.scope == TASK,
        )
    ).first()
    if row is None or row[1] <= now:
        return None
    return row[0]


def request_token(request: HTTPConnection) -> str | None:
    return request_credential(request)[0]


def request_credential(request: HTTPConnection) -> tuple[str | None, bool]:
    """The request's token and whether it came from the session cookie (not a bearer header)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(SESSION_COOKIE) or None
    return cookie, cookie is not None


# ---- the browser's session -------------------------------------------------------------------

# The console signs in with ``/api/v1/auth/login``, which also sets the session as an HttpOnly
# cookie (Path=/api, SameSite=Strict). A request that the browser authenticates with that
# cookie alone must also carry ``X-Flotilla-Csrf`` with the login reply's ``csrfToken``, which
# only the console's own JavaScript has (in its sessionStorage): notebooks and TensorBoards run
# their users' JavaScript on this very origin, under /proxy/, and the browser would attach the
# cookie to their requests too. The token is derived from the session token (an HMAC), so
# nothing more is stored and it dies with the session.
CSRF_HEADER = "X-Flotilla-Csrf"
CSRF_REFUSAL = "this request came from a browser without the console's CSRF header"
_CSRF_KEY = b"flotilla console csrf v1"


def csrf_token(session_token: str) -> str:
    """The CSRF token that goes with a login session's token."""
    return hmac.new(_CSRF_KEY, session_token.encode(), hashlib.sha256).hexdigest()


def csrf_ok(request: HTTPConnection, session_token: str) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode(), csrf_token(session_token).encode())


# ---- what a report-only task token may read --------------------------------------------------

# (method, route path) → the path parameter naming what is read. A report-only token reads only
# its own experiment and what belongs to it; every other route refuses it.
_REPORT_ONLY_READS: dict[tuple[str, str], str | None] = {
    ("GET", "/api/v1/me"): None,
    ("GET", "/api/v1/experiments/{experiment_id}"): "experiment_id",
    ("GET", "/api/v1/experiments/{experiment_id}/model_def"): "experiment_id",
    ("GET", "/api/v1/experiments/{experiment_id}/trials"): "experiment_id",
    ("GET", "/api/v1/experiments/{experiment_id}/checkpoints"): "experiment_id",
    ("GET", "/api/v1/trials/{trial_id}"): "trial_id",
    ("GET", "/api/v1/trials/{trial_id}/checkpoints"): "trial_id",
    ("GET", "/api/v1/trials/{trial_id}/metrics"): "trial_id",
    ("GET", "/api/v1/checkpoints/{uuid}"): "uuid",
    ("GET", "/api/v1/checkpoints/{uuid}/content"): "uuid",
}
REPORT_ONLY_REFUSAL = (
    "this is a task's report-only token: it may only report for its own trial and allocation "
    "and read its own experiment and checkpoints"
)


def _experiment_of_allocation(session: Session, allocation_id: str) -> int | None:
    task = session.scalar(
        select(models.Task)
        .join(models.Allocation, models.Allocation.task_id == models.Task.id)
        .where(models.Allocation.id == allocation_id)
    )
    trial_id = (task.config or {}).get("trial_id") if task is not None else None
    if trial_id is None:
        return None
    return session.scalar(select(models.Trial.experiment_id).where(models.Trial.id == trial_id))


def _experiment_read(session: Session, param: str, value: str) -> int | None:
    """The experiment that the path parameter ``param`` = ``value`` belongs to."""
    try:
        if param == "experiment_id":
            return int(value)
        if param == "trial_id":
            return session.scalar(
                select(models.Trial.experiment_id).where(models.Trial.id == int(value))
            )
    except (ValueError, OverflowError):
        return None
    return session.scalar(
        select(models.Checkpoint.experiment_id).where(models.Checkpoint.uuid == value)
    )


def report_only_may(session: Session, caller: Caller, request: HTTPConnection) -> bool:
    """Whether a report-only task token may call this route (see ``_REPORT_ONLY_READS``)."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    key = (request.scope.get("method", "GET"), path or "")
    if key not in _REPORT_ONLY_READS or caller.allocation_id is None:
        return False
    param = _REPORT_ONLY_READS[key]
    if param is None:
        return True
    own = _experiment_of_allocation(session, caller.allocation_id)
    value = str(request.path_params.get(param, ""))
    return own is not None and _experiment_read(session, param, value) == own


# ---- dependencies --------------------------------------------------------------------------


async def current_caller(request: Request) -> Caller:
    """The authenticated caller of an ``/api/v1`` route, or 401/403. A proxy cookie is never
    accepted here (401); a report-only task token only on the routes it may use (403); the
    session cookie only with its CSRF header (403). A token already checked is answered from
    ``token_cache.CALLERS`` on the event loop (emptied by every change of a token or a user);
    otherwise the database is read on a worker thread."""
    token, from_cookie = request_credential(request)
    if token is None:
        raise ApiError(401, "authentication required: log in with `det user login`")
    state = request.app.state.master
    digest = token_digest(token)
    found: Caller | None = token_cache.CALLERS.get(digest, state.clock())
    if found is None or found.report_only:
        found = await asyncio.to_thread(_check_token, request, token, digest)
    if found is None or found.scope == PROXY:
        raise ApiError(401, "invalid or expired token: log in again with `det user login`")
    if from_cookie and not csrf_ok(request, token):
        raise ApiError(403, CSRF_REFUSAL)
    return found


def _check_token(request: Request, token: str, digest: str) -> Caller | None:
    """:func:`current_caller`'s database check (a worker thread): the caller, remembered for
    the next request; 403 for a report-only token off its routes."""
    state = request.app.state.master
    generation = token_cache.CALLERS.generation
    with state.db.session() as session:
        found = caller_for_token(session, token, state.clock())
        if found is not None and found.report_only and not report_only_may(session, found, request):
            raise ApiError(403, REPORT_ONLY_REFUSAL)
    if found is not None:
        token_cache.CALLERS.put(digest, found, generation)
    return found


async def current_user(caller: Caller = Depends(current_caller)) -> models.User:
    """The caller's user, for ordinary work: login sessions and task tokens acting as their
    owner (report-only task tokens only where they may read)."""
    return caller.user


async def session_user(caller: Caller = Depends(current_caller)) -> Caller:
    """A caller with a user session (``login`` scope), or 403: password, user and token
    changes need one; no task token may make them."""
    if not caller.is_session:
        raise ApiError(403, f"{NEEDS_SESSION} (a task's token may not do this)")
    return caller


async def admin_user(caller: Caller = Depends(session_user)) -> models.User:
    """An admin with a user session, or 403."""
    if not caller.user.admin:
        raise ApiError(
            403, f"user '{caller.user.username}' is not an admin: this action needs an admin"
        )
    return caller.user
