"""Login and user management against a real master, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster import Api, Master, running_cluster


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    for master, _ in running_cluster(tmp_path, db_url, agents=0):
        yield master


def salted(password: str) -> str:
    return hashlib.sha512(("GubPEmmotfiK9TMD6Zdw" + password).encode()).hexdigest()


def test_info_is_public_and_reports_a_determined_compatible_version(master: Master) -> None:
    info = httpx.get(f"{master.url}/info").json()
    assert info["version"] == "0.38.1"
    assert info["clusterId"] and info["masterId"]
    assert "clusterName" in info


def test_fresh_cluster_has_admin_and_determined_with_blank_passwords(master: Master) -> None:
    admin = Api(master, "admin")
    assert admin.get("/api/v1/me").json()["user"]["admin"] is True
    determined = Api(master, "determined")
    me = determined.get("/api/v1/me").json()["user"]
    assert me["username"] == "determined" and me["admin"] is False
    # ... and the master says so at start, as long as they stay blank.
    assert "users 'admin', 'determined' have no password" in master.log_path.read_text()


def test_curl_recipe_creates_a_user_and_sets_its_password(master: Master) -> None:
    """Determined's REST recipe verbatim: curl -d sends form-encoded content type, no isHashed."""
    http = httpx.Client(base_url=master.url)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    login = http.post(
        "/api/v1/auth/login", content='{"username": "admin", "password": ""}', headers=form
    )
    assert login.status_code == 200, login.text
    auth = {**form, "Authorization": f"Bearer {login.json()['token']}"}
    created = http.post(
        "/api/v1/users",
        content='{"user": {"username": "alice", "admin": false, "active": true}, '
        '"password": "Passw0rd!"}',
        headers=auth,
    )
    assert created.status_code == 200, created.text
    users = http.get("/api/v1/users", headers=auth).json()["users"]
    alice_id = next(u["id"] for u in users if u["username"] == "alice")
    changed = http.post(
        f"/api/v1/users/{alice_id}/password", content='"NewPassw0rd!"', headers=auth
    )
    assert changed.status_code == 200, changed.text
    assert Api(master, "alice", "NewPassw0rd!").get("/api/v1/me").status_code == 200
    old = http.post("/api/v1/auth/login", json={"username": "alice", "password": "Passw0rd!"})
    assert old.status_code == 403
    assert old.json()["message"] == "invalid credentials"


def test_hashed_and_plain_passwords_log_in_to_the_same_account(master: Master) -> None:
    admin = Api(master)
    response = admin.post(
        "/api/v1/users",
        json={"user": {"username": "bob"}, "password": salted("S3cret!x"), "isHashed": True},
    )
    assert response.status_code == 200
    plain = httpx.post(
        f"{master.url}/api/v1/auth/login", json={"username": "bob", "password": "S3cret!x"}
    )
    hashed = httpx.post(
        f"{master.url}/api/v1/auth/login",
        json={"username": "bob", "password": salted("S3cret!x"), "isHashed": True},
    )
    assert plain.status_code == hashed.status_code == 200


def test_json_without_content_type_is_parsed(master: Master) -> None:
    request = httpx.Request(
        "POST", f"{master.url}/api/v1/auth/login", content=b'{"username":"admin","password":""}'
    )
    request.headers.pop("Content-Type", None)
    response = httpx.Client().send(request)
    assert response.status_code == 200, response.text


def test_users_are_paginated(master: Master) -> None:
    admin = Api(master)
    for name in ("u1", "u2", "u3"):
        body = {"user": {"username": name}, "password": "Pw12345678"}
        assert admin.post("/api/v1/users", json=body).status_code == 200
    page = admin.get("/api/v1/users", params={"offset": 1, "limit": 2}).json()
    assert page["pagination"] == {
        "offset": 1,
        "limit": 2,
        "startIndex": 1,
        "endIndex": 3,
        "total": 5,
    }
    assert [u["username"] for u in page["users"]] == ["determined", "u1"]


def test_only_admins_manage_users(master: Master) -> None:
    admin = Api(master)
    admin.post("/api/v1/users", json={"user": {"username": "carol"}, "password": "Pw12345678"})
    carol = Api(master, "carol", "Pw12345678")
    forbidden = carol.post("/api/v1/users", json={"user": {"username": "mallory"}})
    assert forbidden.status_code == 403
    assert "not an admin" in forbidden.json()["message"]
    assert carol.patch("/api/v1/users/1", json={"active": False}).status_code == 403
    me = carol.get("/api/v1/me").json()["user"]
    renamed = carol.patch(f"/api/v1/users/{me['id']}", json={"displayName": "Carol C"})
    assert renamed.status_code == 200 and renamed.json()["user"]["displayName"] == "Carol C"


def test_deactivated_user_cannot_log_in_and_loses_tokens(master: Master) -> None:
    admin = Api(master)
    admin.post("/api/v1/users", json={"user": {"username": "dave"}, "password": "Pw12345678"})
    dave = Api(master, "dave", "Pw12345678")
    user_id = dave.get("/api/v1/me").json()["user"]["id"]
    assert admin.patch(f"/api/v1/users/{user_id}", json={"active": False}).status_code == 200
    assert dave.get("/api/v1/me").status_code == 401
    again = httpx.post(
        f"{master.url}/api/v1/auth/login", json={"username": "dave", "password": "Pw12345678"}
    )
    assert again.status_code == 403 and "deactivated" in again.json()["message"]


def test_password_change_logs_the_user_out_everywhere(master: Master) -> None:
    admin = Api(master)
    admin.post("/api/v1/users", json={"user": {"username": "fay"}, "password": "Pw12345678"})
    fay = Api(master, "fay", "Pw12345678")
    user_id = fay.get("/api/v1/me").json()["user"]["id"]
    changed = admin.post(f"/api/v1/users/{user_id}/password", json="Pw87654321")
    assert changed.status_code == 200
    assert fay.get("/api/v1/me").status_code == 401
    assert admin.get("/api/v1/me").status_code == 200
    assert Api(master, "fay", "Pw87654321").get("/api/v1/me").status_code == 200


def test_logout_revokes_the_token(master: Master) -> None:
    api = Api(master)
    assert api.post("/api/v1/auth/logout").status_code == 200
    assert api.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"user": {"username": "x"', "malformed JSON"),
        (b'{"user": {"username": "x", "colour": "red"}}', "user.colour: Extra inputs"),
        (b'{"user": {"username": 5}}', "user.username: Input should be a valid string"),
        (b'{"user": {"username": "x", "admin": "sure"}}', "user.admin: Input should be"),
        (b"{}", "user: Field required"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(master: Master, body: bytes, expected: str) -> None:
    admin = Api(master)
    response = admin.post("/api/v1/users", content=body)
    assert response.status_code == 400
    assert expected in response.json()["message"]
    assert expected in response.json()["error"]["error"]
    users = [u["username"] for u in admin.get("/api/v1/users").json()["users"]]
    assert users == ["admin", "determined"]


def test_missing_or_bad_token_is_401(master: Master) -> None:
    assert httpx.get(f"{master.url}/api/v1/users").status_code == 401
    bad = httpx.get(f"{master.url}/api/v1/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_duplicate_user_is_a_conflict(master: Master) -> None:
    admin = Api(master)
    body = {"user": {"username": "erin"}, "password": "Pw12345678"}
    assert admin.post("/api/v1/users", json=body).status_code == 200
    again = admin.post("/api/v1/users", json=body)
    assert again.status_code == 409 and "already exists" in again.json()["error"]["error"]
