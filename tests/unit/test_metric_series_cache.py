"""The metric series cache (master/api/metric_series.py) against a real SQLite database: a first
read, then only new rows; a restarted run's reports out of batches order; eviction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from master import models
from master.api.metric_series import SeriesCache, series_reply
from master.db import Database, migrate

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'cache.db'}")
    migrate(db.engine)
    with db.session() as session:
        session.add(models.User(id=1, username="admin", admin=True))
        session.flush()
        session.add(
            models.Experiment(
                id=1,
                owner_id=1,
                name="e",
                state="STATE_ACTIVE",
                config={},
                original_config="",
                checkpoint_storage={},
                resource_pool="default",
            )
        )
        session.flush()
        for trial_id in (1, 2):
            session.add(
                models.Trial(
                    id=trial_id, experiment_id=1, request_id=str(trial_id), state="S", hparams={}
                )
            )
    try:
        yield db
    finally:
        db.close()


def report(db: Database, trial_id: int, group: str, batches: int, values: dict[str, Any]) -> None:
    with db.session() as session:
        session.add(
            models.TrialMetrics(
                trial_id=trial_id,
                trial_run_id=1,
                group=group,
                steps_completed=batches,
                metrics=values,
                report_time=NOW,
            )
        )


def read(db: Database, cache: SeriesCache, after: int | None = None) -> dict[str, Any]:
    with db.session() as session:
        entries, cursor = cache.read(session, [1, 2])
    body = series_reply(entries, cursor, ["training", "validation"], [], 1000, after)
    decoded: dict[str, Any] = json.loads(json.dumps(body))
    return decoded


def points(body: dict[str, Any], trial_id: int, name: str = "loss") -> list[list[float]]:
    for series in body["series"]:
        if series["trialId"] == trial_id and series["name"] == name:
            found: list[list[float]] = series["points"]
            return found
    return []


def test_first_read_then_only_new_rows(database: Database) -> None:
    cache = SeriesCache()
    for batches in (1, 2, 3):
        report(database, 1, "training", batches, {"loss": 1.0 / batches, "lr": 0.1, "s": "x"})
    first = read(database, cache)
    assert points(first, 1) == [[1, 1.0], [2, 0.5], [3, 1 / 3]]
    assert first["names"] == {"training": ["loss", "lr"], "validation": []}
    report(database, 1, "training", 4, {"loss": 0.25})
    report(database, 2, "validation", 4, {"loss": 0.5, "nan": float("nan"), "big": 10**400})
    new = read(database, cache, after=first["cursor"])
    assert points(new, 1) == [[4, 0.25]]
    assert [s["trialId"] for s in new["series"]] == [1, 2]
    assert read(database, cache)["names"]["validation"] == ["loss"]
    assert points(read(database, cache), 1)[-1] == [4, 0.25]


def test_a_restarted_run_reports_earlier_batches_again(database: Database) -> None:
    for batches in (10, 20, 30):
        report(database, 1, "training", batches, {"loss": float(batches)})
    report(database, 1, "training", 20, {"loss": 2.0})  # resumed from the checkpoint at 20
    cache = SeriesCache()
    body = read(database, cache)
    assert [p[0] for p in points(body, 1)] == [10, 20, 20, 30]
    report(database, 1, "training", 25, {"loss": 2.5})
    assert [p[0] for p in points(read(database, cache), 1)] == [10, 20, 20, 25, 30]
    new = read(database, cache, after=body["cursor"])
    assert points(new, 1) == [[25, 2.5]]


def test_least_recently_read_series_are_dropped_past_the_bound(database: Database) -> None:
    cache = SeriesCache(max_points=3)
    for batches in (1, 2):
        report(database, 1, "training", batches, {"loss": 1.0})
        report(database, 2, "training", batches, {"loss": 2.0})
    with database.session() as session:
        cache.read(session, [1])
        cache.read(session, [2])  # 4 points held: trial 1's go
        assert (1, "training") not in cache._entries
        assert (2, "training") in cache._entries
        entries, _ = cache.read(session, [1])  # read again, whole
    body = series_reply(entries, 0, ["training"], [], 1000, None)
    assert [s["total"] for s in body["series"]] == [2]


def test_a_report_committed_after_a_newer_one_is_not_lost(database: Database) -> None:
    """PostgreSQL's ids are handed out at insert, so row 8 may commit after row 10 was read."""
    now = [0.0]
    cache = SeriesCache(clock=lambda: now[0])
    report(database, 1, "training", 1, {"loss": 1.0})
    read(database, cache)

    def row(row_id: int, batches: int) -> None:
        with database.session() as session:
            session.add(
                models.TrialMetrics(
                    id=row_id,
                    trial_id=1,
                    trial_run_id=1,
                    group="training",
                    steps_completed=batches,
                    metrics={"loss": float(batches)},
                    report_time=NOW,
                )
            )

    row(10, 3)
    now[0] = 1.0
    assert points(read(database, cache), 1) == [[1, 1.0], [3, 3.0]]
    row(8, 2)  # committed late
    now[0] = 2.0
    assert points(read(database, cache), 1) == [[1, 1.0], [2, 2.0], [3, 3.0]]
    now[0] = 13.0  # the read at 2 s has settled: nothing is read twice
    body = read(database, cache)
    assert points(body, 1) == [[1, 1.0], [2, 2.0], [3, 3.0]]
    entry = cache._entries[(1, "training")]
    assert entry.checked == 10 and entry.recent == set()
    assert points(read(database, cache, after=9), 1) == [[3, 3.0]]
