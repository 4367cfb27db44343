"""The master's database going away under it (master/db.py, master/api/errors.py): a
transaction waits ``unavailable_wait`` for a database it cannot reach, one that lost its
connection half-way is run again, and a request that fails on the database is a 503."""

from __future__ import annotations

import socket
import time

import psycopg2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from master.api import errors
from master.db import Database
from tests.conftest import PG_ADMIN_URL


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_is_waited_for_then_answered_503() -> None:
    db = Database(f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", unavailable_wait=0.5)
    app = FastAPI()
    errors.install(app)
    app.add_middleware(errors.UnexpectedErrorMiddleware)

    @app.get("/count")
    def count() -> int:
        with db.session() as session:
            return int(session.execute(text("select 1")).scalar_one())

    started = time.monotonic()
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/count")
    assert time.monotonic() - started >= 0.25  # it waited (backoff up to the next try that fits)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["message"].startswith("the database is unavailable (error ")
    db.close()


def test_a_transaction_that_loses_its_connection_half_way_runs_again(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite is a file in this process: there is no server connection to lose")
    db = Database(db_url, unavailable_wait=10)
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    backends: list[int] = []

    def fn(session: Session) -> int:
        backends.append(int(session.execute(text("select pg_backend_pid()")).scalar_one()))
        if len(backends) == 1:  # the server ends this session, as a restart would
            with admin.cursor() as cursor:
                cursor.execute("select pg_terminate_backend(%s)", (backends[0],))
            session.execute(text("select 1"))
        return len(backends)

    try:
        assert db.transaction(fn) == 2
        assert backends[0] != backends[1]

        def fails(session: Session) -> None:
            session.execute(text("select * from no_such_table"))

        with pytest.raises(Exception) as raised:  # not a lost connection: not run again
            db.transaction(fails)
        assert not isinstance(raised.value, OperationalError)
    finally:
        admin.close()
        db.close()
