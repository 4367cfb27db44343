"""Cost for the console against a live master, on SQLite and PostgreSQL: the idle row, the
efficiency figure, groups by experiment and label that add up, a user's own share, the time
series and CSV export; and experiments carrying what they cost so far."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from master import models
from master.db import Database
from tests.integration.cluster import Api, Master
from tests.integration.console_helpers import (
    USER,
    opened_database,
    ordinary,
    report,
    seed_experiment,
    started_master,
)

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)
WINDOW = {"since": "2026-01-01T08:00:00Z", "until": "2026-01-01T12:00:00Z"}


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    yield from started_master(tmp_path, db_url)


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    yield from opened_database(db_url)


# ---- cost ----------------------------------------------------------------------------------------


def seed_costs(database: Database) -> int:
    """One 2-slot instance at $2/h for 08:00–12:00 ($8): the admin's trial holds a slot
    08:00–10:00 ($2, experiment labelled a and b), the user's command one 09:00–11:00 ($2);
    $4 idle. Returns the experiment's id."""
    experiment_id, (trial_id, _) = seed_experiment(database)
    with database.session() as session:
        owner = session.scalar(select(models.User.id).where(models.User.username == USER))
        session.get_one(models.Experiment, experiment_id).start_time = NOON - timedelta(hours=5)
        session.add_all(
            [
                models.ExperimentLabel(experiment_id=experiment_id, label="a"),
                models.ExperimentLabel(experiment_id=experiment_id, label="b"),
                models.ProvisionedInstance(
                    id="i-cost",
                    resource_pool="default",
                    provider="aws",
                    instance_type="g5.2xlarge",
                    market="on-demand",
                    price_per_hour=2.0,
                    slots=2,
                    state="terminated",
                    launched_at=NOON - timedelta(hours=4),
                    terminated_at=NOON,
                ),
                models.Task(
                    id="trial-cost",
                    task_type="TRIAL",
                    owner_id=1,
                    resource_pool="default",
                    state="STATE_TERMINATED",
                    config={"trial_id": trial_id},
                ),
                models.Task(
                    id="command-cost",
                    task_type="COMMAND",
                    owner_id=owner,
                    resource_pool="default",
                    state="STATE_TERMINATED",
                ),
            ]
        )
        session.flush()
        session.add(
            models.TrialRun(
                trial_id=trial_id, run_id=1, task_id="trial-cost", allocation_id="trial-cost.0"
            )
        )
        for task_id, start in (("trial-cost", 4), ("command-cost", 3)):
            session.add(
                models.Allocation(
                    id=f"{task_id}.0",
                    task_id=task_id,
                    state="STATE_TERMINATED",
                    agent_slots={"i-cost": [0]},
                    started_at=NOON - timedelta(hours=start),
                    ended_at=NOON - timedelta(hours=start - 2),
                )
            )
    return experiment_id


def by_key(body: dict[str, Any]) -> dict[str, tuple[float, float, bool]]:
    return {g["key"]: (g["usd"], g["slotHours"], g["idle"]) for g in body["groups"]}


def test_cost_has_an_idle_row_efficiency_groups_that_add_up_and_user_scoping(
    master: Master, database: Database
) -> None:
    user = ordinary(master)
    admin = Api(master)
    experiment_id = seed_costs(database)

    body = admin.get("/api/v1/cost", params={**WINDOW, "groupBy": "user"}).json()
    assert body["totalUsd"] == pytest.approx(8.0) and body["idleUsd"] == pytest.approx(4.0)
    assert body["paidSlotHours"] == pytest.approx(8.0)
    assert body["allocatedSlotHours"] == pytest.approx(4.0)
    assert body["efficiency"] == pytest.approx(0.5)
    assert by_key(body) == {
        "admin": (2.0, 2.0, False),
        USER: (2.0, 2.0, False),
        "idle": (4.0, 4.0, True),
    }
    for group_by in ("pool", "user", "experiment", "label", "task", "instance"):
        grouped = admin.get("/api/v1/cost", params={**WINDOW, "groupBy": group_by}).json()
        assert sum(g["usd"] for g in grouped["groups"]) == pytest.approx(grouped["totalUsd"])
    experiments = admin.get("/api/v1/cost", params={**WINDOW, "groupBy": "experiment"}).json()
    assert by_key(experiments)[str(experiment_id)] == (2.0, 2.0, False)
    assert by_key(experiments)["(no experiment)"] == (2.0, 2.0, False)
    labels = admin.get("/api/v1/cost", params={**WINDOW, "groupBy": "label"}).json()
    assert by_key(labels)["a"] == (1.0, 1.0, False) == by_key(labels)["b"]

    # A user sees their own money only: no idle row, no fleet-wide figures.
    mine = user.get("/api/v1/cost", params={**WINDOW, "groupBy": "user"}).json()
    assert mine["totalUsd"] == pytest.approx(2.0) and mine["idleUsd"] == 0
    assert by_key(mine) == {USER: (2.0, 2.0, False)}
    assert mine["efficiency"] is None and mine["instanceHours"] == 0
    pools = user.get("/api/v1/cost", params={**WINDOW, "groupBy": "pool"}).json()
    assert by_key(pools) == {"default": (2.0, 2.0, False)}

    # Bad ranges name the parameter.
    for params, name in (
        ({"since": "2026-01-01T12:00:00Z", "until": "2026-01-01T08:00:00Z"}, "since"),
        ({"since": "2026-01-01T08:00:00", "until": "2026-01-01T12:00:00Z"}, "since"),
        ({"since": "2026-01-01T08:00:00Z", "until": "2026-01-01T12:00:00"}, "until"),
        ({"since": "yesterday"}, "since"),
        ({"groupBy": "planet"}, "groupBy"),
    ):
        for path in ("/api/v1/cost", "/api/v1/cost/series"):
            bad = admin.get(path, params=params)
            assert bad.status_code == 400 and name in bad.json()["message"], (path, bad.text)
    assert httpx.get(f"{master.url}/api/v1/cost").status_code == 401


def test_cost_series_buckets_add_up_and_export_as_csv(master: Master, database: Database) -> None:
    user = ordinary(master)
    admin = Api(master)
    seed_costs(database)
    window = {"since": "2026-01-01T07:30:00Z", "until": "2026-01-01T12:00:00Z"}
    total = admin.get("/api/v1/cost", params=window).json()["totalUsd"]
    series = admin.get("/api/v1/cost/series", params={**window, "groupBy": "user"}).json()
    assert series["bucket"] == "hour" and series["groupBy"] == "user"
    assert series["totalUsd"] == pytest.approx(total) == pytest.approx(8.0)
    starts = [b["start"] for b in series["buckets"]]
    assert starts[0] == "2026-01-01T07:30:00.000000Z" and len(starts) == 5
    assert series["buckets"][0]["end"] == "2026-01-01T08:00:00.000000Z"
    assert sum(b["totalUsd"] for b in series["buckets"]) == pytest.approx(total, abs=1e-6)
    nine = series["buckets"][2]  # 09:00–10:00: both allocations, no idle
    assert nine["totalUsd"] == pytest.approx(2.0) and nine["idleUsd"] == pytest.approx(0.0)
    assert {g["key"] for g in nine["groups"]} == {"admin", USER, "idle"}
    days = admin.get("/api/v1/cost/series", params={**window, "bucket": "day"}).json()
    assert len(days["buckets"]) == 1 and days["buckets"][0]["totalUsd"] == pytest.approx(8.0)
    mine = user.get("/api/v1/cost/series", params=window).json()
    assert sum(b["totalUsd"] for b in mine["buckets"]) == pytest.approx(2.0)
    assert all(not g["idle"] for b in mine["buckets"] for g in b["groups"])

    exported = admin.get("/api/v1/cost", params={**window, "groupBy": "user", "format": "csv"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["key"], float(r["usd"]), r["idle"]) for r in rows] == [
        ("admin", 2.0, "False"),
        (USER, 2.0, "False"),
        ("idle", 4.0, "True"),
    ]
    exported = admin.get("/api/v1/cost/series", params={**window, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sum(float(r["usd"]) for r in rows) == pytest.approx(8.0)
    assert set(rows[0]) == {
        "bucket_start",
        "bucket_end",
        "group_by",
        "key",
        "usd",
        "slot_hours",
        "idle",
    }
    too_many = admin.get(
        "/api/v1/cost/series", params={"since": "2020-01-01T00:00:00Z", "bucket": "hour"}
    )
    assert too_many.status_code == 400 and "bucket" in too_many.json()["message"]


# ---- experiments and trials for the console --------------------------------------------------


def test_experiments_carry_their_cost_and_sort_and_filter_like_determined(
    master: Master, database: Database
) -> None:
    user = ordinary(master)
    costly = seed_costs(database)
    other, _ = seed_experiment(database, trials=3)
    with database.session() as session:
        session.get_one(models.Experiment, other).owner_id = session.scalar(
            select(models.User.id).where(models.User.username == USER)
        )
        session.get_one(models.Experiment, other).state = "STATE_COMPLETED"

    from tests.integration.test_experiments_api import determined_parses

    reply = user.get(f"/api/v1/experiments/{costly}").json()
    determined_parses("v1GetExperimentResponse", reply)
    one = reply["experiment"]
    assert one["costUsd"] == pytest.approx(2.0)
    assert one["labels"] == ["a", "b"] and one["username"] == "admin" and one["numTrials"] == 2
    assert one["searcherMetric"] == "validation_loss" and one["resourcePool"] == "default"
    listed = {e["id"]: e for e in user.get("/api/v1/experiments").json()["experiments"]}
    assert listed[costly]["costUsd"] == pytest.approx(2.0) and listed[other]["costUsd"] == 0.0

    def ids(**params: Any) -> list[int]:
        response = user.get("/api/v1/experiments", params=params)
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["experiments"]]

    assert ids(sortBy="SORT_BY_NUM_TRIALS", orderBy="ORDER_BY_DESC") == [other, costly]
    assert ids(sortBy="SORT_BY_USER") == [costly, other]  # admin before console-user
    assert ids(users=USER) == [other]
    assert ids(labels="a") == [costly]
    assert ids(states="STATE_COMPLETED") == [other]
    assert ids(archived="false") == [costly, other]

    trials = user.get(f"/api/v1/experiments/{costly}/trials").json()["trials"]
    first = trials[0]
    assert first["bestValidationMetric"] is None and first["latestValidationMetric"] is None
    assert first["duration"] >= 0 and first["restarts"] == 0 and first["checkpointCount"] == 0
    assert first["hparams"] == {"lr": 0.1} and first["state"] == "STATE_ACTIVE"
    report(database, first["id"], "validation", [(5, {"validation_loss": 0.3})])
    report(database, first["id"], "validation", [(9, {"validation_loss": 0.4})])
    with database.session() as session:
        for row in session.scalars(
            select(models.TrialMetrics).where(models.TrialMetrics.trial_id == first["id"])
        ):
            row.searcher_metric = row.metrics["validation_loss"]
    reply = user.get(f"/api/v1/trials/{first['id']}").json()
    determined_parses("v1GetTrialResponse", reply)
    determined_parses("v1GetExperimentsResponse", user.get("/api/v1/experiments").json())
    trial = reply["trial"]
    assert trial["bestValidationMetric"]["metrics"]["avgMetrics"] == {"validation_loss": 0.3}
    assert trial["bestValidationMetric"]["totalBatches"] == 5
    assert trial["latestValidationMetric"]["totalBatches"] == 9
    assert trial["latestValidationMetric"]["endTime"].endswith("Z")
