"""The pool history the master seeds a provisioning loop with, read from the database (SQLite
and PostgreSQL): arrivals of the last 8 days, the last boot times, since when the pool has
records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from unittest.mock import Mock

import pytest

from master import models
from master.db import Database, migrate
from master.provisioning import MasterWorld
from provisioner.config import ProviderConfig
from provisioner.history import HistoryRecorder
from provisioner.loop import PoolLoop
from provisioner.types import Demand

NOW = datetime(2026, 1, 12, 12, tzinfo=UTC)


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    migrate(db.engine)
    with db.session() as session:
        session.add(models.User(id=1, username="admin", admin=True))
        session.flush()
        tasks = [("old", "gpu", 9 * 24 * 60), ("week", "gpu", 7 * 24 * 60), ("now", "gpu", 5)]
        tasks.append(("other", "cpu", 5))
        for task_id, pool, minutes in tasks:
            at = NOW - timedelta(minutes=minutes)
            session.add(
                models.Task(
                    id=task_id,
                    task_type="COMMAND",
                    owner_id=1,
                    resource_pool=pool,
                    slots=2,
                    state="QUEUED",
                    created_at=at,
                )
            )
            session.flush()
            session.add(
                models.Allocation(id=f"{task_id}.1", task_id=task_id, state="QUEUED", created_at=at)
            )
        for n, boot in enumerate((80, 100, None)):
            launched = NOW - timedelta(hours=1, minutes=n)
            session.add(
                models.ProvisionedInstance(
                    id=f"i{n}",
                    resource_pool="gpu",
                    provider="aws",
                    instance_type="g5.xlarge",
                    zone=None,
                    market="on-demand",
                    price_per_hour=1.0,
                    slots=1,
                    state="running",
                    launched_at=launched,
                    joined_at=None if boot is None else launched + timedelta(seconds=boot),
                )
            )
    try:
        yield db
    finally:
        db.close()


def test_the_loop_starts_from_what_the_database_remembers(database: Database) -> None:
    world = MasterWorld(Mock(), database)
    seed = asyncio.run(world.history("gpu", NOW))
    assert [(job, at, slots) for job, at, slots in seed.arrivals] == [
        ("week", NOW - timedelta(days=7), 2),
        ("now", NOW - timedelta(minutes=5), 2),
    ]
    assert sorted(seed.boot_seconds) == [80.0, 100.0]
    assert seed.since == NOW - timedelta(days=8)  # records go back further than 8 days

    recorder = HistoryRecorder(since=NOW)
    recorder.seed(seed)
    recorder.observe(NOW, [Demand("now", 2)], [], [])  # already seeded: not counted twice
    history = recorder.history(NOW)
    assert history.arrivals == ((NOW - timedelta(minutes=5), 2),)  # the 2 h window
    assert history.same_hour_last_week == 2
    assert history.since == NOW - timedelta(days=8)


def test_a_starting_loop_seeds_its_history_and_survives_a_failing_read(database: Database) -> None:
    config = ProviderConfig(type="local")
    loop = PoolLoop("gpu", config, Mock(), MasterWorld(Mock(), database), lambda: NOW)
    asyncio.run(loop._seed_history())
    assert loop.history.history(NOW).boot_seconds == (100.0, 80.0)  # oldest first

    broken = MasterWorld(Mock(), database)
    broken.history = Mock(side_effect=RuntimeError("database gone"))  # type: ignore[method-assign]
    loop = PoolLoop("gpu", config, Mock(), broken, lambda: NOW)
    asyncio.run(loop._seed_history())
    assert loop.history.history(NOW).arrivals == ()
