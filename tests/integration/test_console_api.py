"""The console's REST API against a live master, on SQLite and PostgreSQL: metric series, the
queue, the fleet's instances (a real local provider for the idle deadline) and scale events.
Cost is in test_console_cost.py, the browser session in test_console_session.py.

Most objects are written straight to the database (no agent runs anything), as
tests/integration/test_openapi_conformance.py does: the master only reads them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from master import auth, models
from master.db import Database
from tests.integration.cluster import (
    Api,
    Master,
    kill_provisioned_agents,
    running_cluster,
    wait_for,
)
from tests.integration.console_helpers import (
    USER,
    opened_database,
    ordinary,
    report,
    seed_experiment,
    started_master,
)


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    yield from started_master(tmp_path, db_url)


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    yield from opened_database(db_url)


# ---- metric series -------------------------------------------------------------------------------


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
