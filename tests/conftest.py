"""Shared fixtures: a database of each kind (every database test runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

PG_ADMIN_URL = os.environ.get(
    "FLOTILLA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


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
