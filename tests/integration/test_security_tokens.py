"""Issue 10's findings 1, 2, 6, 7 and 10, each as the exploit that now fails, on a real cluster
(SQLite and PostgreSQL): stolen task tokens, re-pointed readiness, proxy cookies, the proxy
answering before it authenticates, identity rules, the last admin."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from master import auth, models
from master.db import Database
from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for
from tests.integration.test_proxy import start_service, ws_url

PASSWORD = "Passw0rd!"
NEEDS_SESSION = "needs a user session: log in with `det user login`"


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=1)


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    for master, _ in running_cluster(tmp_path, db_url, agents=0):
        yield master


def bearer(master: Master, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=master.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def make_user(admin: Api, name: str, *, is_admin: bool = False) -> int:
    body = {"user": {"username": name, "admin": is_admin}, "password": PASSWORD}
    response = admin.post("/api/v1/users", json=body)
    assert response.status_code == 200, response.text
    user_id: int = response.json()["user"]["id"]
    return user_id


def task_token(api: Api) -> tuple[str, str]:
    """A running command's own token, read from its output as a thief in the task would."""
    task_id = api.run(["sh", "-c", 'echo "token=$DET_SESSION_TOKEN"; exec sleep 300'])
    line = wait_for(
        "the command to print its token",
        lambda: next((m for m in api.task_output(task_id) if m.startswith("token=")), None),
        60,
        logs=[api.master.log_path],
    )
    return task_id, line.strip().removeprefix("token=")


def trial_token(db_url: str, owner: str) -> str:
    """A trial's report-only token, issued the way the scheduler issues it (the trial itself
    is not started: these tests only need its credential)."""
    db = Database(db_url)
    now = datetime.now(UTC)
    try:
        with db.session() as session:
            owner_id = session.scalars(
                select(models.User.id).where(models.User.username == owner)
            ).one()
            session.add(
                models.Task(
                    id="trial-task",
                    task_type="TRIAL",
                    owner_id=owner_id,
                    config={"trial_id": 424242},
                    resource_pool="default",
                    state="RUNNING",
                )
            )
            session.flush()
            session.add(models.Allocation(id="trial-task.1", task_id="trial-task", state="RUNNING"))
            session.flush()
            return auth.issue_token(
                session, owner_id, timedelta(hours=1), now, allocation_id="trial-task.1"
            )
    finally:
        db.close()


def error(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    return str(body["error"]["error"])


def test_a_stolen_command_token_cannot_touch_users_passwords_or_admin_routes(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    admin = Api(master)
    alice_id = make_user(admin, "alice")
    admin_id = admin.get("/api/v1/me").json()["user"]["id"]
    _, stolen = task_token(admin)  # the admin's running command
    thief = bearer(master, stolen)

    attempts = [
        thief.patch(f"/api/v1/users/{alice_id}", json={"admin": True}),
        thief.patch(f"/api/v1/users/{admin_id}", json={"password": "Stolen0wned"}),
        thief.post(f"/api/v1/users/{admin_id}/password", json="Stolen0wned"),
        thief.post(f"/api/v1/users/{alice_id}/password", json="Stolen0wned"),
        thief.post("/api/v1/users", json={"user": {"username": "mallory", "admin": True}}),
        thief.post("/api/v1/agents/agent-0/disable", json={}),
    ]
    for refused in attempts:
        assert refused.status_code == 403, refused.text
        assert NEEDS_SESSION in error(refused)
    assert Api(master, "alice", PASSWORD).get("/api/v1/me").json()["user"]["admin"] is False
    assert admin.get("/api/v1/agents").json()["agents"][0]["enabled"] is True

    # Ordinary work as the owner still works: a command's token may start a command.
    started = thief.post("/api/v1/commands", json={"config": {"entrypoint": ["true"]}})
    assert started.status_code == 200, started.text
    assert thief.get("/api/v1/me").json()["user"]["username"] == "admin"


def test_a_trial_token_only_reports_and_reads_its_own(master: Master, db_url: str) -> None:
    admin = Api(master)
    trial = bearer(master, trial_token(db_url, "admin"))
    refused = trial.post("/api/v1/commands", json={"config": {"entrypoint": ["true"]}})
    assert refused.status_code == 403 and "report-only" in error(refused)
    for path in ("/api/v1/users", "/api/v1/experiments", "/api/v1/experiments/1"):
        assert trial.get(path).status_code == 403, path
    patched = trial.patch("/api/v1/users/1", json={"admin": True})
    assert patched.status_code == 403
    assert trial.get("/api/v1/me").json()["user"]["username"] == "admin"
    assert admin.get("/api/v1/users").status_code == 200


def test_a_password_change_revokes_other_sessions_and_downgrades_task_tokens(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    admin = Api(master)
    alice_id = make_user(admin, "alice")
    alice, other_laptop = Api(master, "alice", PASSWORD), Api(master, "alice", PASSWORD)
    _, stolen = task_token(alice)
    thief = bearer(master, stolen)
    assert thief.get("/api/v1/commands").status_code == 200

    changed = alice.patch(f"/api/v1/users/{alice_id}", json={"password": "N3wPassword"})
    assert changed.status_code == 200, changed.text
    assert alice.get("/api/v1/me").status_code == 200  # the session that changed it stays
    assert other_laptop.get("/api/v1/me").status_code == 401
    # The task's token is report-only now: training goes on, acting as alice does not.
    assert thief.get("/api/v1/commands").status_code == 403
    assert (
        thief.post("/api/v1/commands", json={"config": {"entrypoint": ["true"]}}).status_code == 403
    )
    assert thief.get("/api/v1/me").status_code == 200

    # An admin resetting alice's password revokes every session of hers.
    assert admin.post(f"/api/v1/users/{alice_id}/password", json="Ag41nNew!").status_code == 200
    assert alice.get("/api/v1/me").status_code == 401
    assert admin.get("/api/v1/me").status_code == 200


def test_readiness_is_set_once_at_the_agents_own_address(
    cluster: tuple[Master, list[Agent]], db_url: str
) -> None:
    master, _ = cluster
    admin = Api(master)
    task_id, token = task_token(admin)
    allocation_id = admin.task(task_id)["allocations"][0]["allocationId"]
    task = bearer(master, token)
    ready = f"/api/v1/allocations/{allocation_id}/ready"

    first = task.post(ready, json={"proxyAddress": "203.0.113.9", "proxyPort": 8123})
    assert first.status_code == 200, first.text
    again = task.post(ready, json={"proxyAddress": "127.0.0.1", "proxyPort": 8080})
    assert again.status_code == 409 and "only once" in error(again)

    db = Database(db_url)
    try:
        with db.session() as session:
            stored = session.get(models.Allocation, allocation_id)
            assert stored is not None
            # The agent connected from loopback; the address the task named is ignored.
            assert stored.proxy_address == "127.0.0.1:8123"
    finally:
        db.close()


def test_a_proxy_cookie_opens_only_its_own_task(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    admin = Api(master)
    task_id = start_service(admin)
    ticket = admin.post(f"/api/v1/tasks/{task_id}/proxy-ticket").json()["url"]
    browser = httpx.Client(base_url=master.url, timeout=30)
    redeemed = browser.get(ticket)
    assert redeemed.status_code == 303
    cookie = redeemed.cookies[auth.SESSION_COOKIE]
    assert browser.get(f"/proxy/{task_id}/ping").status_code == 200

    assert bearer(master, cookie).get("/api/v1/me").status_code == 401
    as_cookie = httpx.get(f"{master.url}/api/v1/me", cookies={auth.SESSION_COOKIE: cookie})
    assert as_cookie.status_code == 401
    other = admin.run(["sleep", "300"], slots=0)
    elsewhere = bearer(master, cookie).get(f"/proxy/{other}/ping")
    assert elsewhere.status_code == 401, elsewhere.text


def test_anonymous_proxy_requests_learn_nothing_about_a_task(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    admin = Api(master)
    admin.run(["sleep", "300"], slots=1)  # takes the only slot
    response = admin.post("/api/v1/notebooks", json={"config": {"resources": {"slots": 1}}})
    assert response.status_code == 200, response.text
    queued = response.json()["notebook"]["id"]
    assert admin.task(queued)["allocations"][0]["state"] == "STATE_QUEUED"

    anonymous = httpx.Client(base_url=master.url, timeout=30)
    answer = anonymous.get(f"/proxy/{queued}/api/status")
    unknown = anonymous.get("/proxy/no-such-task/api/status")
    assert answer.status_code == unknown.status_code == 401
    assert answer.json() == unknown.json()
    assert queued not in answer.text and "slot" not in answer.text

    for task in (queued, "no-such-task"):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(master, task, "api/kernels"), open_timeout=10)
        assert refused.value.response.status_code == 401


def test_identity_rules_over_the_api(master: Master) -> None:
    admin = Api(master)
    no_password = admin.post("/api/v1/users", json={"user": {"username": "zed"}})
    assert no_password.status_code == 400 and "needs a password" in error(no_password)
    for clash in ("Admin", "ADMIN", "ａｄｍｉｎ"):
        body = {"user": {"username": clash}, "password": PASSWORD}
        answer = admin.post("/api/v1/users", json=body)
        assert answer.status_code == 409 and "'admin' already exists" in error(answer)
    for bad in ("a\u200bb", "a\u202eb", "../x", "a\x1b[31m", "a\x00b"):
        answer = admin.post("/api/v1/users", json={"user": {"username": bad}, "password": PASSWORD})
        assert answer.status_code == 400 and "user.username: " in error(answer), bad
    long_name = {"user": {"username": "zed", "displayName": "z" * 300}, "password": PASSWORD}
    answer = admin.post("/api/v1/users", json=long_name)
    assert answer.status_code == 400 and "displayName" in error(answer)
    weak = admin.post("/api/v1/users", json={"user": {"username": "zed"}, "password": "weak"})
    assert weak.status_code == 400 and "too weak" in error(weak)

    created = admin.post(
        "/api/v1/users", json={"user": {"username": "Mixed.Case"}, "password": PASSWORD}
    )
    assert created.json()["user"]["username"] == "mixed.case"
    by_name = admin.get("/api/v1/users/MIXED.case/by-username")
    assert by_name.status_code == 200

    make_user(admin, "a_b")
    make_user(admin, "axb")
    names = [
        u["username"] for u in admin.get("/api/v1/users", params={"name": "_"}).json()["users"]
    ]
    assert names == ["a_b"]
    assert [
        u["username"] for u in admin.get("/api/v1/users", params={"name": "%"}).json()["users"]
    ] == []


def test_the_last_active_admin_can_be_neither_demoted_nor_deactivated(master: Master) -> None:
    admin = Api(master)
    admin_id = admin.get("/api/v1/me").json()["user"]["id"]
    for change in ({"admin": False}, {"active": False}):
        refused = admin.patch(f"/api/v1/users/{admin_id}", json=change)
        assert refused.status_code == 409 and "last active admin" in error(refused)
    second = make_user(admin, "admin2", is_admin=True)
    assert admin.patch(f"/api/v1/users/{admin_id}", json={"admin": False}).status_code == 200
    admin2 = Api(master, "admin2", PASSWORD)
    refused = admin2.patch(f"/api/v1/users/{second}", json={"admin": False})
    assert refused.status_code == 409
