"""Issue 10's input findings against a real master: each request that used to give a 500, stall
the master or be stored for the agent to refuse now gets a 400/401/413/429 naming the problem."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.cluster import Api, Master, running_cluster

TOO_BIG = 2**63  # one past int64's largest
MIB = 2**20


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    for master, _ in running_cluster(
        tmp_path, db_url, agents=0, login={"attempts_per_user": 3, "attempts_per_client": 6}
    ):
        yield master


@pytest.fixture
def sqlite_master(tmp_path: Path) -> Iterator[Master]:
    """For what involves no database: body limits and context checks (nothing is stored)."""
    for master, _ in running_cluster(tmp_path, f"sqlite:///{tmp_path / 'f.db'}", agents=0):
        yield master


def _int_operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """``(method, path template, where, name)`` of every integer path or query parameter."""
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                types = {param.get("schema", {}).get("type")}
                for option in param.get("schema", {}).get("anyOf", []):
                    types |= {option.get("type"), option.get("items", {}).get("type")}
                types.add(param.get("schema", {}).get("items", {}).get("type"))
                if "integer" in types and param["in"] in ("path", "query"):
                    yield method.upper(), path, param["in"], param["name"]


def _url(path: str, schema_params: list[dict[str, Any]], target: str, where: str) -> str:
    url = path
    for param in schema_params:
        if param["in"] == "path":
            value = TOO_BIG if param["name"] == target and where == "path" else 1
            url = url.replace("{" + param["name"] + "}", str(value))
    if where == "query":
        url += f"?{target}={TOO_BIG}"
    return url


def test_int64_overflow_in_any_int_parameter_is_a_400_naming_it(master: Master) -> None:
    admin = Api(master)
    schema = admin.get("/openapi.json").json()
    operations = list(_int_operations(schema))
    assert len(operations) >= 22  # the review found 22 operations that gave 500
    failures = []
    for method, path, where, name in operations:
        params = schema["paths"][path][method.lower()].get("parameters", [])
        response = admin.http.request(method, _url(path, params, name, where))
        if response.status_code != 400 or name not in response.json()["message"]:
            failures.append(f"{method} {path} ({where} {name}): {response.status_code}")
    assert not failures, failures
    # The examples from the review, by hand.
    assert admin.get(f"/api/v1/users/{TOO_BIG}").status_code == 400
    listed = admin.get(f"/api/v1/experiments?userIds={TOO_BIG}")
    assert listed.status_code == 400 and "userIds" in listed.json()["message"]


def test_lone_surrogates_and_invalid_utf8_are_400_naming_where(master: Master) -> None:
    anonymous = httpx.Client(base_url=master.url)
    login = anonymous.post("/api/v1/auth/login", content=b'{"username": "\\ud800", "password": ""}')
    assert login.status_code == 400 and "body.username" in login.json()["message"]
    admin = Api(master)
    created = admin.post(
        "/api/v1/users", content=b'{"user": {"username": "a\\udfffb"}, "password": "x"}'
    )
    assert created.status_code == 400 and "body.user.username" in created.json()["message"]
    assert admin.get("/api/v1/users/%ED%A0%80/by-username").status_code == 400
    query = admin.get("/api/v1/users?name=%ED%A0%80")
    assert query.status_code == 400 and "query string" in query.json()["message"]
    raw = admin.post("/api/v1/auth/login", content=b'{"username": "\xff"}')
    assert raw.status_code == 400 and "UTF-8" in raw.json()["message"]
    # A surrogate pair is ordinary text and still works.
    ok = admin.post(
        "/api/v1/auth/login", content=b'{"username": "\\ud83d\\ude00", "password": "x"}'
    )
    assert ok.status_code == 403


def test_nul_characters_are_400_naming_where(master: Master) -> None:
    """PostgreSQL text cannot hold U+0000: refused before any route (found by Schemathesis)."""
    anonymous = httpx.Client(base_url=master.url)
    login = anonymous.post(
        "/api/v1/auth/login", content=b'{"username": "a\\u0000", "password": ""}'
    )
    assert login.status_code == 400 and "body.username" in login.json()["message"]
    admin = Api(master)
    command = admin.post("/api/v1/commands", json={"config": {"description": "a\0b"}})
    assert command.status_code == 400 and "body.config.description" in command.json()["message"]
    for url in ("/api/v1/users/a%00/by-username", "/api/v1/tasks/a%00", "/api/v1/users?name=a%00"):
        answer = admin.get(url)
        assert answer.status_code == 400 and "NUL" in answer.json()["message"], url


def test_failed_logins_are_rate_limited_per_user_and_per_client(master: Master) -> None:
    http = httpx.Client(base_url=master.url)

    def login(username: str, password: str = "wrong") -> httpx.Response:
        return http.post("/api/v1/auth/login", json={"username": username, "password": password})

    assert [login("alice").status_code for _ in range(3)] == [403, 403, 403]
    limited = login("ALICE")  # the same user, canonically
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    # Successful logins count against neither the user nor the client.
    assert all(login("admin", "").status_code == 200 for _ in range(8))
    # Another user still gets the client's remaining three failures, then the client is out.
    assert [login("bob").status_code for _ in range(3)] == [403, 403, 403]
    assert login("carol").status_code == 429
    assert login("admin", "").status_code == 429


def test_bodies_over_the_limit_are_refused_before_they_are_read(sqlite_master: Master) -> None:
    http = httpx.Client(base_url=sqlite_master.url)
    declared = http.post("/api/v1/users", content=b"{" + b" " * (2 * MIB) + b"}")
    assert declared.status_code == 413, declared.text
    assert "limit of 1048576 bytes" in declared.json()["message"]

    def chunks() -> Iterator[bytes]:
        yield b'{"username": "'
        for _ in range(4):
            yield b"x" * MIB

    streamed = httpx.Client(base_url=sqlite_master.url).post("/api/v1/auth/login", content=chunks())
    assert streamed.status_code == 413
    # A context upload may be larger, but only from a caller with a token.
    files = [{"path": "big.bin", "content": base64.b64encode(b"0" * 2 * MIB).decode()}]
    body = {"config": {"entrypoint": "true", "resources": {"slots": 99}}, "files": files}
    anonymous = httpx.post(f"{sqlite_master.url}/api/v1/commands", json=body)
    assert anonymous.status_code == 401
    accepted = Api(sqlite_master).post("/api/v1/commands", json=body)
    assert accepted.status_code not in (401, 413), accepted.text


def test_eight_unauthenticated_50mb_bodies_do_not_grow_the_master(sqlite_master: Master) -> None:
    assert sqlite_master.proc is not None
    process = psutil.Process(sqlite_master.proc.pid)
    before = process.memory_info().rss
    payload = b"x" * (50 * MIB)
    statuses: list[int | str] = []

    def send(path: str, streamed: bool) -> None:
        content: Any = iter([payload[i : i + MIB] for i in range(0, len(payload), MIB)])
        try:
            with httpx.Client(timeout=60) as client:
                response = client.post(
                    f"{sqlite_master.url}{path}", content=content if streamed else payload
                )
            statuses.append(response.status_code)
        except httpx.TransportError as exc:  # the master closed the connection mid-upload
            statuses.append(type(exc).__name__)

    threads = [
        threading.Thread(target=send, args=(path, i % 2 == 0))
        for i, path in enumerate(["/api/v1/users", "/api/v1/commands", "/api/v1/experiments"] * 3)
    ][:8]
    peak = before
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, process.memory_info().rss)
        threads[0].join(0.02)
    for thread in threads:
        thread.join()
    assert (peak - before) / MIB <= 20, f"RSS grew by {(peak - before) / MIB:.0f} MiB"
    assert all(s in (401, 413) or isinstance(s, str) for s in statuses), statuses
    assert any(s in (401, 413) for s in statuses), statuses
    assert httpx.get(f"{sqlite_master.url}/info").status_code == 200


EXPERIMENT = (
    "entrypoint: python model_def.py\n"
    "searcher: {name: single, metric: loss, max_length: {batches: 1}}\n"
)
BAD_CONTEXTS = [("", "names no file"), (".", "names no file"), ("a\x00b", "NUL")]
BAD_CONTEXTS += [("n" * 5000, "bytes long"), ("/etc/x", "absolute"), ("f", "is a file")]


def test_a_context_the_agent_cannot_write_is_refused_before_anything_is_stored(
    sqlite_master: Master,
) -> None:
    api = Api(sqlite_master)
    content = base64.b64encode(b"x").decode()
    for path, reason in BAD_CONTEXTS:
        files = [{"path": path, "content": content}, {"path": "f/child", "content": content}]
        for kind, config in (("commands", {"entrypoint": "true"}), ("notebooks", {})):
            response = api.post(f"/api/v1/{kind}", json={"config": config, "files": files})
            assert response.status_code == 400, (path, response.text)
            message = response.json()["message"]
            assert reason in message and "files.0.path" in message, (path, message)
        experiment = api.post(
            "/api/v1/experiments", json={"config": EXPERIMENT, "modelDefinition": files}
        )
        assert experiment.status_code == 400 and reason in experiment.json()["message"]
    bad_base64 = [{"path": "model_def.py", "content": "%%%"}]
    experiment = api.post(
        "/api/v1/experiments", json={"config": EXPERIMENT, "modelDefinition": bad_base64}
    )
    assert experiment.status_code == 400, experiment.text
    assert "'model_def.py'" in experiment.json()["message"]
    assert "base64" in experiment.json()["message"]
    assert api.get("/api/v1/commands").json()["commands"] == []
    assert api.get("/api/v1/notebooks").json()["notebooks"] == []
    assert api.get("/api/v1/experiments").json()["experiments"] == []
