"""Caches of the token checks every request makes, per process.

Every ``/api/v1`` request checks its bearer token (a join of the session row and its user), and a
trial reports many times a second with its own (the token, its allocation, the allocation's
task). The answers only change when a token or a user changes: a token revoked (the allocation
ended or was requeued, a logout, a password change), a token downgraded, a user renamed,
deactivated or made (no longer) an admin. :func:`invalidate` empties every cache at once *and
again when the changing transaction commits*: a check that read the database before the commit
and stores its answer after it is refused by the generation counter, so a revoked token or a
changed user is never seen as it was once the changing transaction has committed.

``master.auth`` calls :func:`invalidate` where it revokes tokens; listeners on every session
make sure every other change is caught too: any flush that changes or deletes a ``users`` or
``user_sessions`` row, and any bulk ``UPDATE``/``DELETE`` of those tables through a session.
Expiry is checked against the stored expiry on every hit. Unknown tokens are never cached.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

# Entries kept before a cache starts over (each is a few hundred bytes; a master has far fewer
# live sessions and trials).
MAX_ENTRIES = 20_000
# Tables whose changes may change what a token stands for.
WATCHED_TABLES = frozenset({"users", "user_sessions"})


class Expiring(Protocol):
    @property
    def expires_at(self) -> datetime: ...


V = TypeVar("V", bound=Expiring)


@dataclass(frozen=True)
class TrialToken:
    """What a valid trial token stands for."""

    allocation_id: str
    trial_id: int
    expires_at: datetime


class TokenCache(Generic[V]):
    """Token digest → what it stands for; thread-safe (handlers and worker threads share it).

    Cleared whole when a user or a login token changes; when only an allocation's tokens are
    revoked (an allocation ends: many times a second on a busy cluster), only the entries of
    that allocation go, so every other caller stays cached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, V] = {}
        self._generation = 0
        self._cleared_at = 0  # generation of the last whole clear
        self._revoked: dict[str, int] = {}  # allocation id → generation it was revoked at

    @property
    def generation(self) -> int:
        """Read before looking a token up in the database; pass it to :meth:`put`."""
        return self._generation

    def get(self, digest: str, now: datetime) -> V | None:
        found = self._entries.get(digest)
        if found is None or found.expires_at <= now:
            return None
        return found

    def put(self, digest: str, value: V, generation: int) -> None:
        """Remember ``value`` unless what it stands for was invalidated since ``generation``
        was read (a clear, or a revocation of its allocation's tokens)."""
        allocation_id = getattr(value, "allocation_id", None)
        with self._lock:
            if generation < self._cleared_at:
                return
            if allocation_id is not None and self._revoked.get(allocation_id, -1) > generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = value

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._cleared_at = self._generation
            self._entries.clear()
            self._revoked.clear()

    def revoke_allocations(self, allocation_ids: frozenset[str]) -> None:
        """Forget the tokens of these allocations only."""
        with self._lock:
            self._generation += 1
            if len(self._revoked) + len(allocation_ids) > MAX_ENTRIES:
                # Too many to remember one by one: refuse every check begun before now.
                self._cleared_at = self._generation
                self._revoked.clear()
            else:
                for allocation_id in allocation_ids:
                    self._revoked[allocation_id] = self._generation
            stale = [
                digest
                for digest, value in self._entries.items()
                if getattr(value, "allocation_id", None) in allocation_ids
            ]
            for digest in stale:
                del self._entries[digest]


TRIAL_TOKENS: TokenCache[TrialToken] = TokenCache()
# master.auth.Caller per token digest (typed loosely here: auth imports this module).
CALLERS: TokenCache[Any] = TokenCache()
_CACHES = (TRIAL_TOKENS, CALLERS)


def clear_all() -> None:
    for cache in _CACHES:
        cache.clear()


def _revoke_all(allocation_ids: frozenset[str]) -> None:
    for cache in _CACHES:
        cache.revoke_allocations(allocation_ids)


def invalidate(session: Session, allocation_ids: frozenset[str] | None = None) -> None:
    """Call in a transaction that revokes or changes tokens or users: clears every cache now
    and again after it commits; with ``allocation_ids``, only those allocations' tokens."""
    if allocation_ids is None:
        clear_all()
        event.listen(session, "after_commit", lambda _session: clear_all(), once=True)
    else:
        _revoke_all(allocation_ids)
        event.listen(
            session, "after_commit", lambda _session: _revoke_all(allocation_ids), once=True
        )


# A statement that invalidated the caches itself (``invalidate`` with allocation ids) says so
# with this execution option, so the listener below does not clear everything for it.
HANDLED = "token_cache_handled"


def _touches_tokens(objects: Any) -> bool:
    return any(getattr(o, "__tablename__", None) in WATCHED_TABLES for o in objects)


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    if _touches_tokens(session.dirty) or _touches_tokens(session.deleted):
        invalidate(session)


def _on_execute(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and not state.execution_options.get(HANDLED):
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in WATCHED_TABLES:
            invalidate(state.session)


# Every session of every engine in this process: registered once, at import (master.auth imports
# this module, so nothing that checks a token can miss it).
event.listen(Session, "before_flush", _before_flush)
event.listen(Session, "do_orm_execute", _on_execute)
