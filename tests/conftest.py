"""Shared fixtures: a database of each kind (every database test runs on SQLite and PostgreSQL),
and temporary directories that per-task uids can pass through.

Run as root, the integration clusters start agents with ``isolation: uid``: their tasks run as
other uids, which must traverse the directories above an agent's work dir under ``tmp_path``.
So the base temp dir lives in ``<tmp>/flotilla-pytest/`` (not pytest's ``pytest-of-root``,
which pytest resets to 0700 whenever a session starts) and every directory of the chain,
``tmp_path`` included, is 0711: other uids may pass through, not list. Under pytest-xdist each
worker's base temp dir is ``popen-gw<N>`` inside the controller's session dir, which the
controller (re)creates 0700: each worker opens it as it starts.

tests/parallel.py says which tests share a worker and in which order they run in parallel.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

pytest_plugins = ["tests.parallel"]

PG_ADMIN_URL = os.environ.get(
    "FLOTILLA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


TRAVERSABLE = 0o711
BASETEMP_ROOT = Path(tempfile.gettempdir()) / "flotilla-pytest"
BASETEMP_MAX_AGE = 24 * 3600.0  # seconds; older sessions' temp dirs are removed


def pytest_configure(config: pytest.Config) -> None:
    """As root, without ``--basetemp``: a fresh base temp dir of this session under
    :data:`BASETEMP_ROOT` (0711); day-old ones of earlier sessions are removed. An xdist worker
    opens the session dir its own base temp dir sits in."""
    if os.geteuid() != 0:
        return
    if hasattr(config, "workerinput"):
        session = Path(config.option.basetemp).parent if config.option.basetemp else None
        if session is not None and session.parent == BASETEMP_ROOT and session.is_dir():
            session.chmod(TRAVERSABLE)
        return
    if config.option.basetemp:
        return
    BASETEMP_ROOT.mkdir(mode=TRAVERSABLE, exist_ok=True)
    if BASETEMP_ROOT.is_symlink() or BASETEMP_ROOT.stat().st_uid != 0:
        return  # not ours: keep pytest's default
    BASETEMP_ROOT.chmod(TRAVERSABLE)
    for old in BASETEMP_ROOT.iterdir():
        if time.time() - old.lstat().st_mtime > BASETEMP_MAX_AGE:
            shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = tempfile.mkdtemp(dir=BASETEMP_ROOT, prefix="session-")


@pytest.fixture
def tmp_path(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's ``tmp_path``, with it and the base temp dir 0711 when running as root."""
    if os.geteuid() == 0:
        base = tmp_path_factory.getbasetemp()
        for directory in (base, *(p for p in tmp_path.parents if base in p.parents), tmp_path):
            directory.chmod(TRAVERSABLE)
    return tmp_path


def _pg_admin() -> psycopg2.extensions.connection:
    connection = psycopg2.connect(PG_ADMIN_URL)
    connection.autocommit = True
    return connection


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database; PostgreSQL gets a throwaway database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'flotilla.db'}"
        return
    name = f"flotilla_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = _pg_admin()
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
