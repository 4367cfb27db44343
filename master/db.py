"""Database engine, sessions and migrations.

SQLite (the embedded default) and PostgreSQL behave the same to callers. SQLite runs in WAL mode
with a busy timeout so the API's thread pool and the scheduler's writes do not trip over each
other. Migrations are applied at start (``migrate``); nothing else creates tables.

PostgreSQL may go away under a running master (a restart, a failover): ``pool_pre_ping`` finds a
pooled connection the server dropped and opens a new one, and while the server cannot be
reached at all, a new transaction waits for it (retrying the connection with capped backoff) for
up to ``unavailable_wait`` seconds before failing. A transaction run with :meth:`Database.run`
that loses its connection half-way is run again from the start (it was rolled back), in the same
window; one in a :meth:`Database.session` block cannot be, and fails with the driver's error,
which the API answers with 503 (:mod:`master.api.errors`), so the client may retry.

The SQLite file holds password and token hashes and every task's logs, so it is created 0600
(SQLite gives its ``-wal``, ``-shm`` and ``-journal`` files the database file's mode) and an
existing one, with its companions, is brought back to 0600 at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from master.config import MasterConfig

log = logging.getLogger(__name__)
UNAVAILABLE_WAIT_SECONDS: float = MasterConfig.model_fields[
    "db_unavailable_wait"
].default.total_seconds()

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
RECONNECT_FIRST_DELAY_SECONDS = 0.1
RECONNECT_MAX_DELAY_SECONDS = 2.0


def secure_sqlite_file(path: Path) -> None:
    """Create ``path`` (an SQLite database) readable by its owner only, or make it so.

    A missing parent directory is created 0700; an existing one keeps its mode."""
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDONLY, PRIVATE_FILE_MODE))
    for candidate in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        if candidate.exists():
            candidate.chmod(PRIVATE_FILE_MODE)


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg2 here, whatever SQLAlchemy's default driver is."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1].split("?", 1)[0]
        if path and path != ":memory:":
            secure_sqlite_file(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # psycopg2's values_plus_batch: an UPDATE or DELETE with many parameter sets (the
    # scheduler's pass stores every allocation it changed in one) goes as pages of statements
    # per round trip, not one round trip per row; INSERTs stay multi-row VALUES.
    batch = {"executemany_mode": "values_plus_batch"} if "+psycopg2" in url else {}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **batch)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back and
# may simply run again.
RETRIED_PGCODES = frozenset({"40P01", "40001"})


def _pgcode(exc: DBAPIError) -> str | None:
    code: str | None = getattr(exc.orig, "pgcode", None)
    return code


def _why(exc: DBAPIError) -> str:
    first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__
    return f"lost the database connection ({first})" if exc.connection_invalidated else first


class Database:
    """Sessions for request handlers (sync, in FastAPI's thread pool) and for async code.

    ``unavailable_wait``: seconds a new transaction waits for a database it cannot reach
    (see the module docstring)."""

    def __init__(self, url: str, unavailable_wait: float = UNAVAILABLE_WAIT_SECONDS) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.unavailable_wait = unavailable_wait
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _begin(self, deadline: float) -> Session:
        """A session with its connection checked out (and pinged): waits, until ``deadline``
        (monotonic), for a database that does not answer."""
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            session = self._sessions()
            try:
                session.connection()
                return session
            except OperationalError as exc:
                session.close()
                if time.monotonic() + delay > deadline:
                    raise
                if delay == RECONNECT_FIRST_DELAY_SECONDS:  # once per transaction, not per try
                    log.warning("the database is unreachable (%s); waiting for it", exc.orig)
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = self._begin(time.monotonic() + self.unavailable_wait)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def transaction(self, fn: Callable[[Session], T]) -> T:
        """``fn`` in a transaction, run again from the start if the connection is lost
        half-way or PostgreSQL ended it as a deadlock or a serialization failure (the database
        rolled it back), until ``unavailable_wait`` has passed."""
        deadline = time.monotonic() + self.unavailable_wait
        while True:
            session = self._begin(deadline)
            try:
                result = fn(session)
                session.commit()
                return result
            except DBAPIError as exc:
                session.rollback()
                again = exc.connection_invalidated or _pgcode(exc) in RETRIED_PGCODES
                if not again or time.monotonic() >= deadline:
                    raise
                log.warning("%s; running the transaction again", _why(exc))
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in a transaction (:meth:`transaction`) on a worker thread, off the
        event loop."""
        return await asyncio.to_thread(self.transaction, fn)

    def close(self) -> None:
        self.engine.dispose()


class GroupCommit:
    """Many small writes from the event loop as few transactions: a write that comes while
    another transaction of this writer runs waits for it and goes in the next one, with every
    other write that came meanwhile (in order). One write's failure is its own: a shared
    transaction that fails is run again one write at a time, so only the failing write's
    caller gets the error."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queued: list[tuple[Callable[[Session], Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[[Session], Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((fn, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await asyncio.shield(done)

    async def _write(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self.db.run(partial(_run_all, fns=[fn for fn, _ in batch]))
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch[0][1], exc)
                    continue
                for fn, done in batch:
                    try:
                        await self.db.run(fn)
                    except Exception as alone:
                        _settle(done, alone)
                    else:
                        _settle(done, None)
                continue
            for _, done in batch:
                _settle(done, None)


def _run_all(session: Session, fns: list[Callable[[Session], Any]]) -> None:
    for fn in fns:
        fn(session)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
        done.exception()  # retrieved here: its waiter (if still waiting) raises it
