"""A tiny in-process stand-in for the master's REST API, for testing ``det`` end to end.

It speaks the wire shapes of the contract (camelCase JSON, bearer tokens, grpc-style error
bodies, ndjson log streams) over a real loopback HTTP server, so the CLI is exercised through
httpx exactly as against the real master. State is plain dicts a test can arrange and inspect.
Also home of the fixtures the ``test_cli_*`` modules share (``cli_env``, ``fake_master``, ``det``).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from cli import session
from cli.main import main
from harness.client import salted_password

UNAUTHENTICATED = (401, {"code": 16, "message": "unauthenticated", "details": []})


@dataclass
class FakeCommand:
    """What a command created through the fake will do: print ``logs`` then end."""

    logs: list[str] = field(default_factory=lambda: ["hi\n"])
    exit_code: int | None = 0
    exit_reason: str | None = None


@dataclass
class FakeMaster:
    url: str = ""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    agents: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_details: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    next_command: FakeCommand = field(default_factory=FakeCommand)
    forbidden: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def add_user(self, username: str, password: str = "", admin: bool = False) -> None:
        uid = len(self.users) + 1
        self.users[username] = {
            "id": uid,
            "username": username,
            "admin": admin,
            "active": True,
            "displayName": None,
            "remote": False,
            "modifiedAt": "2024-05-01T12:00:00Z",
            "lastAuthAt": None,
        }
        self.passwords[username] = salted_password(password)

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any, token: str):
        self.requests.append((method, path, body))
        if path == "/info":
            return 200, {"version": "0.1.0", "clusterName": "test", "isEnterprise": False}
        if (method, path) == ("POST", "/api/v1/auth/login"):
            name, pw = body.get("username"), body.get("password")
            user = self.users.get(name)
            if not body.get("isHashed") or user is None or self.passwords[name] != pw:
                return 401, {"code": 16, "message": "invalid credentials", "details": []}
            if not user["active"]:
                return 403, {"code": 7, "message": "user is not active", "details": []}
            new_token = secrets.token_hex(8)
            self.tokens[new_token] = name
            return 200, {"token": new_token, "user": user}
        username = self.tokens.get(token)
        if username is None:
            return UNAUTHENTICATED
        if path in self.forbidden:
            return 403, {"code": 7, "message": self.forbidden[path], "details": []}
        return self.route(method, path, query, body, username, token)

    def route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, me: str, tok: str
    ):
        parts = path.strip("/").split("/")[2:]  # after api/v1
        if (method, parts) == ("POST", ["auth", "logout"]):
            self.tokens.pop(tok, None)
            return 200, {}
        if parts == ["me"]:
            return 200, {"user": self.users[me]}
        if parts == ["master"]:
            return 200, {"version": "0.1.0", "clusterName": "test", "masterId": "m1"}
        if parts == ["users"] and method == "GET":
            offset, limit = int(query["offset"][0]), int(query["limit"][0])
            users = list(self.users.values())
            page = users[offset : offset + limit]
            return 200, {"users": page, "pagination": {"offset": offset, "total": len(users)}}
        if parts == ["users"] and method == "POST":
            if not self.users[me]["admin"]:
                return 403, {"code": 7, "message": "only admins may create users", "details": []}
            self.add_user(body["user"]["username"], admin=body["user"]["admin"])
            self.passwords[body["user"]["username"]] = body["password"]
            return 200, {"user": self.users[body["user"]["username"]]}
        if parts[:1] == ["users"] and len(parts) >= 2:
            user = next(u for u in self.users.values() if str(u["id"]) == parts[1])
            if parts[2:] == ["password"]:
                self.passwords[user["username"]] = body["password"]
            else:
                user.update(body)
            return 200, {"user": user}
        if parts == ["agents"]:
            return 200, {"agents": self.agents}
        if parts[:1] == ["agents"] and method == "POST":
            agent = next(a for a in self.agents if a["id"] == parts[1])
            agent["enabled"] = parts[2] == "enable"
            agent["draining"] = bool((body or {}).get("drain"))
            return 200, {}
        if parts == ["resource-pools"]:
            pool = {"name": "default", "type": "RESOURCE_POOL_TYPE_STATIC", "numAgents": 1}
            return 200, {"resourcePools": [pool], "pagination": {}}
        if parts == ["tasks"]:
            return 200, {"allocationIdToSummary": self.tasks}
        if parts[:1] == ["tasks"] and parts[2:] == ["logs"]:
            return 200, [
                {"result": {"id": i, "message": m}}
                for i, m in enumerate(self.logs.get(parts[1], []))
            ]
        if parts[:1] == ["tasks"]:
            detail = self.task_details.get(parts[1])
            return (
                (200, {"task": detail})
                if detail
                else (404, {"code": 5, "message": "task not found"})
            )
        if parts == ["commands"] and method == "POST":
            return 200, self._create_command(body["config"], me)
        if parts == ["commands"]:
            return 200, {"commands": list(self.commands.values())}
        if parts[:1] == ["commands"] and parts[1] in self.commands:
            if parts[2:] == ["kill"]:
                self.commands[parts[1]]["state"] = "STATE_TERMINATED"
                return 200, {}
            return 200, {"command": self.commands[parts[1]], "config": {"entrypoint": "x"}}
        return 404, {"code": 5, "message": f"no route for {method} {path}", "details": []}

    def _create_command(self, config: dict[str, Any], username: str) -> dict[str, Any]:
        command_id = f"{len(self.commands) + 1:08x}-0000-0000-0000-000000000000"
        plan = self.next_command
        command = {
            "id": command_id,
            "description": "Command (fake)",
            "state": "STATE_TERMINATED",
            "username": username,
            "resourcePool": "default",
            "registeredTime": "2024-05-01T12:00:00Z",
            "config": config,
        }
        self.commands[command_id] = command
        self.logs[command_id] = list(plan.logs)
        allocation = {"allocationId": command_id + ".1", "state": "STATE_TERMINATED"}
        allocation["endTime"] = "2024-05-01T12:00:05Z"
        if plan.exit_code is not None:
            allocation["exitCode"] = plan.exit_code
        if plan.exit_reason is not None:
            allocation["exitReason"] = plan.exit_reason
        self.task_details[command_id] = {"taskId": command_id, "allocations": [allocation]}
        return {"command": command, "config": config}


def _handler(fake: FakeMaster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            status, payload = fake.handle(self.command, url.path, parse_qs(url.query), body, token)
            self.send_response(status)
            if isinstance(payload, list):  # an ndjson stream, ended by closing the connection
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for line in payload:
                    self.wfile.write((json.dumps(line) + "\n").encode())
                    self.wfile.flush()
                    time.sleep(0.01)
                return
            data = json.dumps(payload).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(name="cli_env")
def cli_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An isolated FLOTILLA_HOME and no DET_* variables from the developer's shell."""
    for var in ("DET_MASTER", "DET_MASTER_ADDR", "DET_USER", "DET_PASS", "DET_USER_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("FLOTILLA_HOME", str(home))

    def no_prompt(prompt: str = "") -> str:
        raise AssertionError(f"unexpected password prompt: {prompt!r}")

    monkeypatch.setattr(session.getpass, "getpass", no_prompt)
    return home


@pytest.fixture(name="fake_master")
def fake_master_fixture(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMaster]:
    fake = FakeMaster()
    fake.add_user("admin", admin=True)
    fake.add_user("determined")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("DET_MASTER", fake.url)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(name="det")
def det_fixture(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``det ARGS...`` in-process; returns the exit code and captured stdout/stderr."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
