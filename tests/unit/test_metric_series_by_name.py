"""The metric series cache's reads of chosen metrics (master/api/metric_values.py: the database
takes the values out of each row's JSON) on SQLite and PostgreSQL: the same points as a read of
whole rows, metrics added to a (trial, group) later, names before every row was read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from master import models
from master.api import metric_values
from master.api.metric_series import GROUPS, SeriesCache, series_reply
from master.db import Database, migrate

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def database(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    # PostgreSQL takes several names out in SQL too here (by default it reads whole rows).
    monkeypatch.setattr(metric_values, "POSTGRESQL_NAMES", 100)
    db = Database(db_url)
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


def read(
    db: Database,
    cache: SeriesCache,
    names: list[str],
    groups: tuple[str, ...] = GROUPS,
    after: int | None = None,
) -> dict[str, Any]:
    with db.session() as session:
        entries, cursor = cache.read(session, [1, 2], groups, names)
    body = series_reply(entries, cursor, list(groups), names, 1000, after)
    decoded: dict[str, Any] = json.loads(json.dumps(body))
    return decoded


def lines(body: dict[str, Any]) -> dict[tuple[int, str, str], list[list[float]]]:
    return {(s["trialId"], s["group"], s["name"]): s["points"] for s in body["series"]}


ODD = {"flag": True, "text": "1.5", "list": [1, 2], "none": None, "huge": 10**400, "tiny": 1e-300}


def fill(db: Database) -> None:
    for batches in (3, 1, 2):  # committed out of batches order
        report(db, 1, "training", batches, {"loss": 1 / batches, "lr": batches, **ODD})
        report(db, 2, "training", batches, {"loss": 2 / batches, "text": "x, y"})
        report(db, 1, "validation", batches, {"validation_loss": 1 / 3 + batches})
    report(db, 2, "training", 4, {"lr": 0.5, "middle": 7.0})  # no loss; neither first nor last
    report(db, 2, "training", 5, {"loss": 0.4})


def test_chosen_metrics_have_the_points_of_whole_rows(database: Database) -> None:
    fill(database)
    names = ["loss", "lr", "flag", "text", "list", "none", "huge", "tiny", "validation_loss"]
    chosen = lines(read(database, SeriesCache(), names))
    whole = {k: v for k, v in lines(read(database, SeriesCache(), [])).items() if k[2] in names}
    assert chosen == whole  # every digit kept, the same non-numbers skipped
    assert chosen[(1, "training", "loss")] == [[1, 1.0], [2, 0.5], [3, 1 / 3]]
    assert chosen[(1, "training", "lr")] == [[1, 1.0], [2, 2.0], [3, 3.0]]
    assert chosen[(1, "training", "tiny")][0] == [1, 1e-300]
    assert (1, "training", "flag") not in chosen and (1, "training", "huge") not in chosen
    assert chosen[(2, "training", "loss")][-1] == [5, 0.4]


def test_names_before_every_row_was_read(database: Database) -> None:
    fill(database)
    body = read(database, SeriesCache(), ["loss"], groups=("training",))
    assert set(lines(body)) == {(1, "training", "loss"), (2, "training", "loss")}
    # From each (trial, group)'s first and latest report: "middle" (batch 4 of 5) not yet.
    assert body["names"] == {
        "training": ["loss", "lr", "tiny"],
        "validation": ["validation_loss"],
    }
    assert read(database, SeriesCache(), [])["names"]["training"] == [
        "loss",
        "lr",
        "middle",
        "tiny",
    ]


def test_a_metric_asked_for_later_joins_without_doubling(database: Database) -> None:
    fill(database)
    cache = SeriesCache()
    first = read(database, cache, ["loss"])
    report(database, 1, "training", 6, {"loss": 0.1, "lr": 6.0, "new": 1.0})
    assert "new" in read(database, cache, ["loss"])["names"]["training"]  # read whole since
    both = read(database, cache, ["loss", "lr"])
    assert lines(both)[(1, "training", "lr")] == [[1, 1.0], [2, 2.0], [3, 3.0], [6, 6.0]]
    assert lines(both)[(1, "training", "loss")][-2:] == [[3, 1 / 3], [6, 0.1]]
    report(database, 1, "training", 7, {"loss": 0.05, "lr": 7.0})
    new = lines(read(database, cache, ["loss", "lr"], after=first["cursor"]))
    assert new[(1, "training", "lr")] == [[6, 6.0], [7, 7.0]]
    assert new[(1, "training", "loss")] == [[6, 0.1], [7, 0.05]]
    assert lines(read(database, cache, ["loss", "lr"])) == lines(
        read(database, SeriesCache(), ["loss", "lr"])
    )
    # Every metric asked for: read whole again, the same points.
    assert lines(read(database, cache, [])) == lines(read(database, SeriesCache(), []))


def test_a_name_the_json_path_cannot_quote_reads_whole_rows(database: Database) -> None:
    report(database, 1, "training", 1, {'we"ird\\': 1.5, "loss": 2.0})
    body = read(database, SeriesCache(), ['we"ird\\'])
    assert lines(body) == {(1, "training", 'we"ird\\'): [[1, 1.5]]}


def test_a_row_sqlite_json_refuses_is_decoded_whole(db_url: str, database: Database) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's json type refuses NaN when it is written")
    report(database, 1, "training", 1, {"loss": 1.0})
    report(database, 1, "training", 2, {"loss": float("nan"), "lr": 0.5})
    report(database, 1, "training", 3, {"loss": 3.0, "lr": 0.25})
    body = read(database, SeriesCache(), ["loss", "lr"])
    assert lines(body) == {
        (1, "training", "loss"): [[1, 1.0], [3, 3.0]],
        (1, "training", "lr"): [[2, 0.5], [3, 0.25]],
    }


def test_postgresql_reads_whole_rows_for_several_names(
    db_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metric_values, "POSTGRESQL_NAMES", 1)  # the default
    fill(database)
    with database.session() as session:
        connection = session.connection()
        postgresql = not db_url.startswith("sqlite")
        assert metric_values.supported(connection, 1)
        assert metric_values.supported(connection, 2) is not postgresql
    cache = SeriesCache()
    body = read(database, cache, ["loss", "lr"])
    assert lines(body)[(1, "training", "lr")] == [[1, 1.0], [2, 2.0], [3, 3.0]]
    assert cache._entries[(1, "training")].metrics == (None if postgresql else {"loss", "lr"})
