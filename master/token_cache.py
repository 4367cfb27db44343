"""A cache of the trial-token checks every report makes, per process.

A trial reports many times a second; checking its token costs three reads (the token, its
allocation, the allocation's task). The answer only changes when a token is revoked, which the
master does in three places (``master.auth``): the allocation ended or was requeued, the token
was logged out, or its user's password changed. Each calls :func:`invalidate` with its session,
which empties the cache at once *and again when that transaction commits*: a check that read
the database before the commit and stores its answer after it is refused by the generation
counter, so a revoked token is never accepted after the revoking transaction has committed.
Expiry is checked against the stored expiry on every hit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import event
from sqlalchemy.orm import Session

# Entries kept before the cache starts over (each is ~200 bytes; a master runs far fewer
# trials at once).
MAX_ENTRIES = 20_000


@dataclass(frozen=True)
class TrialToken:
    """What a valid trial token stands for."""

    allocation_id: str
    trial_id: int
    expires_at: datetime


class TrialTokenCache:
    """Token digest → :class:`TrialToken`; thread-safe (handlers and worker threads share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, TrialToken] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before looking a token up in the database; pass it to :meth:`put`."""
        return self._generation

    def get(self, digest: str, now: datetime) -> TrialToken | None:
        found = self._entries.get(digest)
        if found is None or found.expires_at <= now:
            return None
        return found

    def put(self, digest: str, value: TrialToken, generation: int) -> None:
        """Remember ``value`` unless the cache was invalidated since ``generation`` was read."""
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = value

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


TRIAL_TOKENS = TrialTokenCache()


def invalidate(session: Session) -> None:
    """Call in a transaction that revokes or changes tokens: clears now and after it commits."""
    TRIAL_TOKENS.clear()
    event.listen(session, "after_commit", lambda _session: TRIAL_TOKENS.clear(), once=True)
