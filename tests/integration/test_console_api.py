"""The console's REST API against a live master, on SQLite and PostgreSQL: metric series, the
fleet's instances, the queue, scale events, cost with its idle row and time series, and the
browser session's CSRF rules.

Most objects are written straight to the database (no agent runs anything), as
tests/integration/test_openapi_conformance.py does: the master only reads them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from master import auth, models
from master.db import Database
from tests.integration.cluster import (
    Agent,
    Api,
    Master,
    kill_provisioned_agents,
    running_cluster,
    wait_for,
)

USER = "console-user"
PASSWORD = "Console-pass-1"


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    server = Master(tmp_path, db_url)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
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


def user_id(database: Database, username: str) -> int:
    with database.session() as session:
        found = session.scalar(
            models.select(models.User.id).where(models.User.username == username)  # type: ignore[attr-defined]
        )
    assert found is not None
    return int(found)


# ---- metric series -------------------------------------------------------------------------------


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


def series_of(body: dict[str, Any], trial_id: int, group: str, name: str) -> dict[str, Any]:
    found = [
        s
        for s in body["series"]
        if (s["trialId"], s["group"], s["name"]) == (trial_id, group, name)
    ]
    assert len(found) == 1, body["series"]
    return found[0]


def test_metric_series_are_downsampled_keeping_extremes_and_follow_a_cursor(
    master: Master, database: Database
) -> None:
    experiment_id, (first, second) = seed_experiment(database)
    losses = [(b, {"loss": 1.0 / b, "note": "text", "flag": True}) for b in range(1, 5001)]
    losses[2999] = (3000, {"loss": 50.0})  # a spike the chart must show
    report(database, first, "training", losses)
    report(database, first, "validation", [(b, {"validation_loss": 0.5}) for b in (1000, 2000)])
    # Reported out of order (a restarted run): sorted by batches on the way out.
    report(database, second, "training", [(20, {"loss": 2.0}), (10, {"loss": 3.0})])
    api = ordinary(master)

    response = api.get(
        f"/api/v1/experiments/{experiment_id}/metrics/series", params={"maxPoints": 100}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["names"] == {"training": ["loss"], "validation": ["validation_loss"]}
    loss = series_of(body, first, "training", "loss")
    assert loss["total"] == 5000 and loss["downsampled"] is True
    assert 2 <= len(loss["points"]) <= 100
    assert [3000, 50.0] in loss["points"] and loss["points"][0] == [1, 1.0]
    assert [p[0] for p in loss["points"]] == sorted(p[0] for p in loss["points"])
    assert series_of(body, second, "training", "loss")["points"] == [[10, 3.0], [20, 2.0]]
    validation = series_of(body, first, "validation", "validation_loss")
    assert validation == {
        "trialId": first,
        "group": "validation",
        "name": "validation_loss",
        "points": [[1000, 0.5], [2000, 0.5]],
        "total": 2,
        "downsampled": False,
    }
    cursor = body["cursor"]
    assert isinstance(cursor, int) and cursor > 0

    # Nothing new: no series. Then only what was reported after the cursor.
    path = f"/api/v1/trials/{first}/metrics/series"
    again = api.get(path, params={"after": cursor}).json()
    assert again["series"] == [] and again["cursor"] == cursor
    report(database, first, "training", [(5001, {"loss": 0.1}), (5002, {"loss": 0.05})])
    new = api.get(path, params={"after": cursor, "group": "training"}).json()
    assert [(s["name"], s["points"], s["total"]) for s in new["series"]] == [
        ("loss", [[5001, 0.1], [5002, 0.05]], 2)
    ]
    assert new["cursor"] > cursor

    # One metric of one group, full resolution.
    one = api.get(
        path, params={"group": "validation", "name": "validation_loss", "maxPoints": 10000}
    ).json()
    assert [(s["group"], s["name"]) for s in one["series"]] == [("validation", "validation_loss")]
    whole = api.get(path, params={"group": "training", "maxPoints": 10000}).json()
    assert series_of(whole, first, "training", "loss")["total"] == 5002
    assert len(series_of(whole, first, "training", "loss")["points"]) == 5002

    # Errors name the parameter; unknown ids are 404; no credentials is 401.
    for params in ({"maxPoints": 1}, {"maxPoints": 10001}, {"group": "testing"}):
        bad = api.get(path, params=params)
        assert bad.status_code == 400, (params, bad.text)
    assert api.get("/api/v1/trials/999999/metrics/series").status_code == 404
    assert api.get("/api/v1/experiments/999999/metrics/series").status_code == 404
    assert httpx.get(f"{master.url}{path}").status_code == 401


def test_a_trial_token_cannot_read_metric_series(master: Master, database: Database) -> None:
    experiment_id, (trial_id, _) = seed_experiment(database)
    now = datetime.now(UTC)
    with database.session() as session:
        session.add(
            models.Task(
                id="trial-task",
                task_type="TRIAL",
                owner_id=1,
                resource_pool="default",
                state="STATE_RUNNING",
                config={"trial_id": trial_id},
            )
        )
        session.flush()
        session.add(
            models.Allocation(
                id="trial-task.0", task_id="trial-task", state="STATE_RUNNING", started_at=now
            )
        )
        session.flush()
        token = auth.issue_token(session, 1, timedelta(hours=1), now, "trial-task.0")
    headers = {"Authorization": f"Bearer {token}"}
    for path in (
        f"/api/v1/experiments/{experiment_id}/metrics/series",
        f"/api/v1/trials/{trial_id}/metrics/series",
    ):
        response = httpx.get(f"{master.url}{path}", headers=headers)
        assert response.status_code == 403, response.text


# ---- queue, instances, scale events --------------------------------------------------------------


def command(api: Api, entrypoint: str, **resources: Any) -> str:
    response = api.post(
        "/api/v1/commands",
        json={"config": {"entrypoint": entrypoint, "resources": resources}},
    )
    assert response.status_code == 200, response.text
    task_id: str = response.json()["command"]["id"]
    return task_id


def test_the_queue_is_in_scheduling_order_with_reasons(master: Master) -> None:
    admin, user = Api(master), ordinary(master)
    low = command(user, "sleep 1", priority=60)
    high = command(admin, "sleep 1", priority=10)
    also_high = command(user, "sleep 1", priority=10, slots=2)
    response = user.get("/api/v1/queue")
    assert response.status_code == 200, response.text
    jobs = response.json()["jobs"]
    assert [j["taskId"] for j in jobs] == [high, also_high, low]
    assert [j["position"] for j in jobs] == [1, 2, 3]
    first, second, third = jobs
    assert first["type"] == "COMMAND" and first["username"] == "admin"
    assert second["username"] == USER and second["slots"] == 2 and second["priority"] == 10
    assert first["reason"] == "waiting for an agent to join pool 'default'"
    assert third["reason"] == (
        "behind 2 jobs of higher priority; waiting for an agent to join pool 'default'"
    )
    assert third["waitingSeconds"] >= 0 and third["queuedTime"].endswith("Z")
    assert third["resourcePool"] == "default" and third["allocationId"].startswith(low)
    in_pool = user.get("/api/v1/queue", params={"pool": "default"}).json()["jobs"]
    assert [j["taskId"] for j in in_pool] == [high, also_high, low]
    assert user.get("/api/v1/queue", params={"pool": "nope"}).status_code == 404
    # The Tasks view's countdown: none for commands, nor for a notebook not yet ready.
    assert {c["idleDeadline"] for c in user.get("/api/v1/commands").json()["commands"]} == {None}
    assert user.post("/api/v1/notebooks", json={}).status_code == 200
    (notebook,) = user.get("/api/v1/notebooks").json()["notebooks"]
    assert notebook["idleDeadline"] is None and notebook["username"] == USER
    assert httpx.get(f"{master.url}/api/v1/queue").status_code == 401


def seed_instances(database: Database) -> None:
    now = datetime.now(UTC)
    with database.session() as session:
        session.add_all(
            [
                models.ProvisionedInstance(
                    id="i-alive",
                    resource_pool="default",
                    provider="aws",
                    instance_type="g5.xlarge",
                    zone="us-east-1a",
                    market="spot",
                    price_per_hour=3.6,
                    slots=1,
                    state="pending",
                    launched_at=now - timedelta(hours=1),
                    launch_reason="1 slot queued for task abc",
                ),
                models.ProvisionedInstance(
                    id="i-ended",
                    resource_pool="default",
                    provider="aws",
                    instance_type="g5.xlarge",
                    zone="us-east-1b",
                    market="on-demand",
                    price_per_hour=1.0,
                    slots=1,
                    state="terminated",
                    launched_at=now - timedelta(hours=3),
                    joined_at=now - timedelta(hours=3),
                    terminated_at=now - timedelta(hours=1),
                    termination_reason="idle for 20m",
                    launch_reason="min_instances 1",
                ),
                models.ProvisionedInstance(
                    id="i-long-gone",
                    resource_pool="default",
                    provider="aws",
                    instance_type="g5.xlarge",
                    zone=None,
                    market="spot",
                    price_per_hour=1.0,
                    slots=1,
                    state="terminated",
                    launched_at=now - timedelta(days=3),
                    terminated_at=now - timedelta(days=2),
                ),
            ]
        )
        session.add_all(
            models.InstanceEvent(
                resource_pool="default", instance_id=instance, at=now - ago, kind=kind, reason=why
            )
            for instance, ago, kind, why in (
                ("i-ended", timedelta(hours=3), "requested", "min_instances 1"),
                ("i-ended", timedelta(hours=1), "terminated", "idle for 20m"),
                (None, timedelta(minutes=30), "launch_failed:capacity", "no spot capacity"),
                ("i-alive", timedelta(minutes=59), "requested", "1 slot queued"),
            )
        )


def test_instances_and_scale_events_for_admins(master: Master, database: Database) -> None:
    seed_instances(database)
    admin, user = Api(master), ordinary(master)
    for path in ("/api/v1/instances", "/api/v1/scale-events"):
        refused = user.get(path)
        assert refused.status_code == 403, refused.text
        assert "not an admin" in refused.json()["message"]
        assert httpx.get(f"{master.url}{path}").status_code == 401

    body = admin.get("/api/v1/instances").json()
    assert body["now"].endswith("Z")
    assert [i["id"] for i in body["instances"]] == ["i-alive", "i-ended"]
    alive, ended = body["instances"]
    assert alive["state"] == "starting" and alive["agentId"] is None
    assert alive["launchReason"] == "1 slot queued for task abc"
    assert alive["idleDeadline"] is None and alive["allocations"] == []
    assert 3599 < alive["uptimeSeconds"] < 3700
    assert alive["costUsd"] == pytest.approx(3.6 * alive["uptimeSeconds"] / 3600, abs=1e-5)
    assert ended["state"] == "terminated" and ended["terminationReason"] == "idle for 20m"
    assert ended["uptimeSeconds"] == pytest.approx(7200, abs=1)
    assert ended["costUsd"] == pytest.approx(2.0, abs=1e-3)
    assert ended["market"] == "on-demand" and ended["zone"] == "us-east-1b"
    week = admin.get("/api/v1/instances", params={"endedWithin": 7 * 86400}).json()
    assert [i["id"] for i in week["instances"]] == ["i-alive", "i-ended", "i-long-gone"]
    assert admin.get("/api/v1/instances", params={"pool": "nope"}).status_code == 404
    assert admin.get("/api/v1/instances", params={"endedWithin": -1}).status_code == 400

    events = admin.get("/api/v1/scale-events").json()["events"]
    assert [e["kind"] for e in events] == [
        "launch_failed:capacity",
        "requested",
        "terminated",
        "requested",
    ]
    assert events[0]["instanceId"] is None and events[0]["reason"] == "no spot capacity"
    assert set(events[0]) == {"id", "time", "resourcePool", "instanceId", "kind", "reason"}
    failed = admin.get("/api/v1/scale-events", params={"kind": "launch_failed:"}).json()
    assert [e["kind"] for e in failed["events"]] == ["launch_failed:capacity"]
    since = (datetime.now(UTC) - timedelta(minutes=45)).isoformat()
    recent = admin.get("/api/v1/scale-events", params={"since": since, "limit": 1}).json()
    assert [e["kind"] for e in recent["events"]] == ["launch_failed:capacity"]
    naive = admin.get("/api/v1/scale-events", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 400 and "since" in naive.json()["message"]


@pytest.fixture
def elastic(tmp_path: Path, db_url: str) -> Iterator[Master]:
    """A pool whose local provider launches one 1-slot agent process at $3.60/h, drained after
    30 s idle."""
    pools = [
        {
            "pool_name": "default",
            "provider": {
                "type": "local",
                "instance_slots": 1,
                "max_instances": 1,
                "max_idle_agent_period": "30s",
                "provisioning_tick": "1s",
                "prices": {"local": 3.6},
            },
        }
    ]
    try:
        for server, _ in running_cluster(tmp_path, db_url, agents=0, resource_pools=pools):
            yield server
    finally:
        kill_provisioned_agents(tmp_path)


def test_the_fleet_grows_for_queued_work_and_idle_instances_show_their_deadline(
    elastic: Master,
) -> None:
    admin = Api(elastic)
    (pool,) = admin.get("/api/v1/resource-pools").json()["resourcePools"]
    provisioning = pool["provisioning"]
    assert (provisioning["minInstances"], provisioning["maxInstances"]) == (0, 1)
    assert provisioning["maxIdleAgentPeriod"] == 30 and provisioning["market"] == "on-demand"
    assert provisioning["fallback"] == {"active": False, "reason": None}
    first = command(admin, "sleep 600")

    def launching() -> str | None:
        jobs = admin.get("/api/v1/queue").json()["jobs"]
        reason = jobs[0]["reason"] if jobs else ""
        return reason if reason.startswith("launching 1 × local") else None

    assert wait_for("the queue to say an instance is launching", launching, 30).endswith(
        ", 0 joined"
    )

    def busy() -> dict[str, Any] | None:
        found = admin.get("/api/v1/instances").json()["instances"]
        return found[0] if found and found[0]["state"] == "busy" else None

    instance = wait_for("the instance to run the command", busy, 60)
    assert instance["allocations"] == [first] and instance["agentId"] == instance["id"]
    assert instance["launchReason"] and instance["joinedTime"] is not None
    second = command(admin, "sleep 600")

    def at_max() -> list[dict[str, Any]] | None:
        jobs: list[dict[str, Any]] = admin.get("/api/v1/queue").json()["jobs"]
        return jobs if jobs and jobs[0]["reason"] == "pool 'default' at max_instances 1" else None

    assert [j["taskId"] for j in wait_for("the pool to be full", at_max, 30)] == [second]
    for task_id in (second, first):
        assert admin.post(f"/api/v1/commands/{task_id}/kill").status_code == 200

    def idle() -> dict[str, Any] | None:
        found = admin.get("/api/v1/instances").json()["instances"]
        return found[0] if found and found[0]["state"] == "idle" else None

    instance = wait_for("the instance to be idle", idle, 30)
    since = datetime.fromisoformat(instance["idleSince"])
    deadline = datetime.fromisoformat(instance["idleDeadline"])
    assert deadline - since == timedelta(seconds=30)
    assert instance["allocations"] == [] and instance["costUsd"] > 0
    kinds = [e["kind"] for e in admin.get("/api/v1/scale-events").json()["events"]]
    assert kinds[-2:] == ["joined", "requested"]


# ---- cost ----------------------------------------------------------------------------------------

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)
WINDOW = {"since": "2026-01-01T08:00:00Z", "until": "2026-01-01T12:00:00Z"}


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


# ---- the browser's session -----------------------------------------------------------------------


def browser_login(master: Master) -> tuple[httpx.Client, str, str]:
    """A cookie-keeping client signed in as admin the console's way: its cookie, csrfToken and
    the Set-Cookie header."""
    browser = httpx.Client(base_url=master.url)
    response = browser.post("/api/v1/auth/login", json={"username": "admin", "password": ""})
    assert response.status_code == 200, response.text
    csrf = response.json()["csrfToken"]
    assert isinstance(csrf, str) and len(csrf) >= 32 and csrf != response.json()["token"]
    return browser, csrf, response.headers["set-cookie"]


def test_the_session_cookie_needs_the_csrf_header_and_bearer_tokens_do_not(
    master: Master,
) -> None:
    browser, csrf, set_cookie = browser_login(master)
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert "path=/api" in attributes and "httponly" in attributes
    assert "samesite=strict" in attributes and "secure" not in attributes  # plain http here

    # httpx sends the cookie only under /api, as a browser would.
    without = browser.get("/api/v1/me")
    assert without.status_code == 403, without.text
    assert without.json()["message"] == (
        "this request came from a browser without the console's CSRF header"
    )
    wrong = browser.get("/api/v1/me", headers={"X-Flotilla-Csrf": "0" * len(csrf)})
    assert wrong.status_code == 403
    right = browser.get("/api/v1/me", headers={"X-Flotilla-Csrf": csrf})
    assert right.status_code == 200 and right.json()["user"]["username"] == "admin"
    posted = browser.post(
        "/api/v1/commands",
        json={"config": {"entrypoint": "true"}},
        headers={"X-Flotilla-Csrf": csrf},
    )
    assert posted.status_code == 200, posted.text
    unsent = browser.post("/api/v1/commands", json={"config": {"entrypoint": "true"}})
    assert unsent.status_code == 403

    # Bearer tokens (the CLI, scripts) need no header; a CSRF token is no credential.
    assert Api(master).get("/api/v1/me").status_code == 200
    alone = httpx.get(f"{master.url}/api/v1/me", headers={"X-Flotilla-Csrf": csrf})
    assert alone.status_code == 401

    # Signing out needs the header too, and clears the cookie where it was set.
    assert browser.post("/api/v1/auth/logout").status_code == 403
    out = browser.post("/api/v1/auth/logout", headers={"X-Flotilla-Csrf": csrf})
    assert out.status_code == 200 and "path=/api" in out.headers["set-cookie"].lower()
    assert browser.get("/api/v1/me", headers={"X-Flotilla-Csrf": csrf}).status_code == 401


@pytest.fixture
def with_agent(tmp_path: Path, db_url: str) -> Iterator[Master]:
    """A master and one agent. The agent runs tasks unisolated: what is tested is the proxy's
    door, not the task's uid (and so it runs where task uids cannot reach this Python)."""
    server = Master(tmp_path, db_url)
    server.start()
    agent = Agent(tmp_path, server, "agent-0", slots=1, isolation="none")
    try:
        agent.start()
        api = Api(server)
        wait_for("the agent to join", lambda: len(api.agents()) == 1, logs=[agent.log_path])
        yield server
    finally:
        agent.stop()
        server.stop()


def test_the_proxy_refuses_the_session_cookie_but_takes_a_ticket_cookie(
    with_agent: Master,
) -> None:
    from tests.integration.test_proxy import start_service

    api = Api(with_agent)
    task_id = start_service(api)
    session_cookie = {auth.SESSION_COOKIE: api.token}
    refused = httpx.get(
        f"{with_agent.url}/proxy/{task_id}/ping",
        cookies=session_cookie,
        headers={"X-Flotilla-Csrf": auth.csrf_token(api.token)},
    )
    assert refused.status_code == 401, refused.text
    assert "not the console's session cookie" in refused.json()["message"]
    # The same token as a bearer (the CLI's way) still opens it.
    assert api.get(f"/proxy/{task_id}/ping").status_code == 200

    ticket = api.post(f"/api/v1/tasks/{task_id}/proxy-ticket").json()
    browser = httpx.Client(base_url=with_agent.url)
    assert browser.get(ticket["url"], follow_redirects=False).status_code == 303
    assert browser.get(f"/proxy/{task_id}/ping").status_code == 200


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
