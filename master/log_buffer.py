"""The master's own recent log, kept in memory for ``det master logs`` (Determined's
``GET /api/v1/master/logs``).

A :class:`MasterLogBuffer` is a ``logging`` handler on the root logger: every record the master
logs (at the configured level) is also kept here, newest last, up to :data:`KEEP_RECORDS`; each
gets an id that only grows, so a follower asks for what came after the last id it saw. The log
on stderr (or CloudWatch) stays the full record; this is the recent past, gone at a restart.
"""

from __future__ import annotations

import collections
import datetime
import logging
import threading
from dataclasses import dataclass

KEEP_RECORDS = 10_000

# Python's level → Determined's v1LogLevel.
_LEVELS = {
    logging.DEBUG: "LOG_LEVEL_DEBUG",
    logging.INFO: "LOG_LEVEL_INFO",
    logging.WARNING: "LOG_LEVEL_WARNING",
    logging.ERROR: "LOG_LEVEL_ERROR",
    logging.CRITICAL: "LOG_LEVEL_CRITICAL",
}


@dataclass(frozen=True)
class MasterLogEntry:
    id: int
    timestamp: datetime.datetime
    level: str
    message: str


class MasterLogBuffer(logging.Handler):
    """Thread-safe: records arrive from any thread; readers take copies."""

    def __init__(self, keep: int = KEEP_RECORDS) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._entries: collections.deque[MasterLogEntry] = collections.deque(maxlen=keep)
        self._next_id = 1
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # a broken record must not break the master's logging
            self.handleError(record)
            return
        level = _LEVELS.get(record.levelno, "LOG_LEVEL_INFO")
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        with self._guard:
            self._entries.append(MasterLogEntry(self._next_id, when, level, message))
            self._next_id += 1

    def entries(self, after_id: int = 0, tail: int | None = None) -> list[MasterLogEntry]:
        """Entries with an id above ``after_id``, oldest first; ``tail``: only the last N."""
        with self._guard:
            found = [e for e in self._entries if e.id > after_id]
        return found[-tail:] if tail else found

    def last_id(self) -> int:
        with self._guard:
            return self._next_id - 1

    def attach(self) -> None:
        logging.getLogger().addHandler(self)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)
