"""What the console API's tests share: a master with no agent, the database it uses (objects
are written straight to it, as tests/integration/test_openapi_conformance.py does), an ordinary
user, and an experiment with metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from master import models
from master.db import Database
from tests.integration.cluster import Api, Master

USER = "console-user"
PASSWORD = "Console-pass-1"


def started_master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    """For a fixture: a master with no agent, stopped afterwards."""
    server = Master(tmp_path, db_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def opened_database(db_url: str) -> Iterator[Database]:
    """For a fixture: the master's database, to write what it will read."""
    db = Database(db_url)
    try:
        yield db
    finally:
        db.close()


def ordinary(master: Master) -> Api:
    """The ordinary user (created on first use) with a session."""
    admin = Api(master)
    created = admin.post(
        "/api/v1/users",
        json={"user": {"username": USER, "active": True}, "password": PASSWORD},
    )
    assert created.status_code in (200, 409), created.text
    return Api(master, USER, PASSWORD)


def seed_experiment(database: Database, trials: int = 2) -> tuple[int, list[int]]:
    config = {"name": "curves", "searcher": {"name": "random", "metric": "validation_loss"}}
    with database.session() as session:
        experiment = models.Experiment(
            owner_id=1,
            name="curves",
            state="STATE_ACTIVE",
            config=config,
            original_config=json.dumps(config),
            checkpoint_storage={"type": "shared_fs", "host_path": "/nonexistent"},
            resource_pool="default",
        )
        session.add(experiment)
        session.flush()
        ids = []
        for index in range(trials):
            trial = models.Trial(
                experiment_id=experiment.id,
                request_id=f"r{index}",
                state="STATE_ACTIVE",
                hparams={"lr": 0.1 * (index + 1)},
            )
            session.add(trial)
            session.flush()
            ids.append(trial.id)
        return experiment.id, ids


def report(
    database: Database, trial_id: int, group: str, rows: list[tuple[int, dict[str, Any]]]
) -> None:
    now = datetime.now(UTC)
    with database.session() as session:
        session.add_all(
            models.TrialMetrics(
                trial_id=trial_id,
                trial_run_id=1,
                group=group,
                steps_completed=batches,
                metrics=values,
                report_time=now,
            )
            for batches, values in rows
        )
