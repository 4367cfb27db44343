"""The schema comes only from Alembic migrations, and they match the ORM models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from master.db import Database, migrate
from master.models import Base


def test_migrations_build_exactly_the_models_schema(db_url: str) -> None:
    db = Database(db_url)
    try:
        migrate(db.engine)
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        db.close()


def test_migrating_twice_is_a_no_op(db_url: str) -> None:
    db = Database(db_url)
    try:
        migrate(db.engine)
        before = sorted(inspect(db.engine).get_table_names())
        migrate(db.engine)
        assert sorted(inspect(db.engine).get_table_names()) == before
        assert {"users", "tasks", "allocations", "task_logs", "agents"} <= set(before)
    finally:
        db.close()
