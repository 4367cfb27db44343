"""``det`` end to end against the in-process fake master: output, exit codes, error lines."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_cli_fake_master import (  # noqa: F401  (fixtures by name)
    FakeCommand,
    FakeMaster,
    Result,
    cli_env_fixture,
    det_fixture,
    fake_master_fixture,
)

Det = Callable[..., Result]


def _agent(agent_id: str, *, busy: bool = False) -> dict[str, Any]:
    container = {"id": "alloc-1", "state": "RUNNING"} if busy else None
    return {
        "id": agent_id,
        "registeredTime": "2024-05-01T12:00:00.123456Z",
        "version": "0.1.0",
        "enabled": True,
        "draining": False,
        "resourcePools": ["default"],
        "addresses": ["10.0.0.5"],
        "isolation": "uid",
        "slots": {
            f"/agents/{agent_id}/slots/0": {
                "id": "0",
                "device": {"id": 0, "brand": "Intel Xeon", "uuid": "", "type": "TYPE_CPU"},
                "enabled": True,
                "draining": False,
                "container": container,
            }
        },
    }


def test_first_command_logs_in_as_determined_with_blank_password_and_caches_token(
    fake_master: FakeMaster, det: Det, cli_env: Path
) -> None:
    result = det("user", "whoami")
    assert (result.code, result.out) == (0, "You are logged in as user 'determined'\n")
    login = next(body for m, p, body in fake_master.requests if p == "/api/v1/auth/login")
    assert login == {"username": "determined", "password": "", "isHashed": True}
    stored = json.loads((cli_env / "auth.json").read_text())
    assert list(stored["masters"][fake_master.url]["tokens"]) == ["determined"]
    assert (cli_env / "auth.json").stat().st_mode & 0o777 == 0o600

    fake_master.requests.clear()
    assert det("user", "whoami").code == 0
    assert all(p != "/api/v1/auth/login" for _, p, _ in fake_master.requests)


def test_login_sends_salted_hash_and_sets_the_active_user(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_master.add_user("alice", "Secret123")
    monkeypatch.setattr("sys.stdin", io.StringIO("Secret123\n"))  # no terminal: read a line
    assert det("user", "login", "alice").code == 0
    login = next(body for m, p, body in fake_master.requests if p == "/api/v1/auth/login")
    assert login["password"] == salted("Secret123")
    assert det("user", "whoami").out == "You are logged in as user 'alice'\n"

    assert det("user", "logout").code == 0
    assert det("user", "whoami").out == "You are logged in as user 'determined'\n"


def salted(password: str) -> str:
    from harness.client import salted_password

    return salted_password(password)


def test_wrong_password_is_one_line_saying_invalid_username_or_password(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_master.add_user("alice", "Secret123")
    monkeypatch.setenv("DET_PASS", "wrong")
    result = det("user", "login", "alice")
    assert result.code == 1
    assert result.err == "Failed to log in: invalid username or password\n"


def test_det_user_and_det_pass_pick_the_user(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_master.add_user("bob", "Secret123")
    monkeypatch.setenv("DET_USER", "bob")
    monkeypatch.setenv("DET_PASS", "Secret123")
    assert det("user", "whoami").out == "You are logged in as user 'bob'\n"


def test_fallback_login_failure_tells_how_to_log_in(fake_master: FakeMaster, det: Det) -> None:
    fake_master.passwords["determined"] = salted("Changed123")
    result = det("agent", "list")
    assert result.code == 1
    assert result.err.strip().startswith("Unauthenticated: Please use 'det user login")
    assert "Traceback" not in result.err


def test_expired_cached_token_is_dropped_and_replaced(fake_master: FakeMaster, det: Det) -> None:
    assert det("user", "whoami").code == 0
    fake_master.tokens.clear()
    assert det("user", "whoami").code == 0
    assert sum(p == "/api/v1/auth/login" for _, p, _ in fake_master.requests) == 2


def test_unreachable_master_names_the_url(cli_env: Path, det: Det) -> None:
    result = det("-m", "127.0.0.1:9", "agent", "list")
    assert result.code == 1
    assert result.err == "cannot reach the master at http://127.0.0.1:9: connection refused\n"


def test_forbidden_says_what_the_master_said(fake_master: FakeMaster, det: Det) -> None:
    fake_master.forbidden["/api/v1/agents"] = "permission denied: view agents"
    result = det("agent", "list")
    assert result.code == 1
    assert result.err == "Failed to list agents: Forbidden: permission denied: view agents\n"


def test_agent_list_table(fake_master: FakeMaster, det: Det) -> None:
    fake_master.agents = [_agent("local-agent-1"), _agent("local-agent-0", busy=True)]
    result = det("a")  # alias, default verb
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split("|")[0] == " Agent ID      "
    assert [c.strip() for c in lines[0].split("|")] == [
        "Agent ID", "Version", "Registered Time", "Slots", "Containers", "Resource Pool",
        "Enabled", "Draining", "Addresses", "Isolation", "Instance Type", "Market", "$/h",
        "State", "Idle For",
    ]  # fmt: skip
    rows = [[c.strip() for c in line.split("|")] for line in lines[2:]]
    assert [r[:10] for r in rows] == [
        ["local-agent-0", "0.1.0", "2024-05-01 12:00:00+0000", "1", "1", "default", "True",
         "False", "10.0.0.5", "uid"],
        ["local-agent-1", "0.1.0", "2024-05-01 12:00:00+0000", "1", "0", "default", "True",
         "False", "10.0.0.5", "uid"],
    ]  # fmt: skip
    records = json.loads(det("agent", "list", "--json").out)
    assert [r["id"] for r in records] == ["local-agent-0", "local-agent-1"]


def test_slot_list_names_the_task_in_each_slot(fake_master: FakeMaster, det: Det) -> None:
    fake_master.agents = [_agent("a1", busy=True), _agent("a2")]
    fake_master.tasks = {"alloc-1": {"taskId": "t1", "allocationId": "alloc-1", "name": "train"}}
    rows = json.loads(det("s", "ls", "--json").out)
    assert [(r["agent_id"], r["slot_id"], r["allocation_id"], r["task_name"]) for r in rows] == [
        ("a1", "0", "alloc-1", "train"),
        ("a2", "0", "FREE", "FREE"),
    ]
    assert rows[0]["type"] == "cpu"


def test_agent_disable_with_drain_sends_drain(fake_master: FakeMaster, det: Det) -> None:
    fake_master.agents = [_agent("a1")]
    result = det("agent", "disable", "a1", "--drain")
    assert result.code == 0
    assert "Disabled agent a1." in result.err
    assert "No tasks in progress on draining nodes." in result.out
    assert fake_master.agents[0]["draining"] is True
    assert det("agent", "disable").err.startswith("Please pass agent id or --all option.")


def test_cmd_run_streams_logs_and_exits_with_the_commands_code(
    fake_master: FakeMaster, det: Det
) -> None:
    fake_master.next_command = FakeCommand(logs=["hi\n", "there"], exit_code=3)
    result = det("cmd", "run", "--config", "resources.slots=0", "echo hi; exit 3")
    assert result.code == 3
    assert result.out == (
        "Launched command (id: 00000001-0000-0000-0000-000000000000, name: Command (fake)).\n"
        "hi\nthere\n"
    )
    create = next(b for m, p, b in fake_master.requests if (m, p) == ("POST", "/api/v1/commands"))
    assert create == {"config": {"resources": {"slots": 0}, "entrypoint": "echo hi; exit 3"}}


def test_cmd_run_without_exit_code_prints_the_reason(fake_master: FakeMaster, det: Det) -> None:
    fake_master.next_command = FakeCommand(logs=[], exit_code=None, exit_reason="agent lost")
    result = det("command", "run", "python", "train.py")
    assert result.code == 1
    assert "agent lost" in result.err
    create = next(b for m, p, b in fake_master.requests if (m, p) == ("POST", "/api/v1/commands"))
    assert create["config"]["entrypoint"] == ["python", "train.py"]


def test_cmd_run_detach_prints_only_the_id(fake_master: FakeMaster, det: Det) -> None:
    result = det("cmd", "run", "-d", "sleep 1")
    assert (result.code, result.out) == (0, "00000001-0000-0000-0000-000000000000\n")


def test_cmd_list_logs_and_kill_accept_id_prefixes(fake_master: FakeMaster, det: Det) -> None:
    det("cmd", "run", "-d", "true")
    listed = det("cmd", "list")
    assert listed.out.splitlines()[0].split("|")[0].strip() == "id"
    assert "TERMINATED" in listed.out and "STATE_" not in listed.out
    assert det("cmd", "logs", "00000001").out == "hi\n"
    killed = det("cmd", "kill", "0000")
    assert killed.out == "Killed command 00000001-0000-0000-0000-000000000000\n"
    missing = det("cmd", "kill", "ffff")
    assert (missing.code, missing.err) == (1, "partial UUID 'ffff' not found\n")


def test_task_logs_for_unknown_task_is_one_line(fake_master: FakeMaster, det: Det) -> None:
    result = det("task", "logs", "nope")
    assert result.code == 0  # the fake streams nothing for unknown tasks
    fake_master.forbidden["/api/v1/tasks/nope/logs"] = "not your task"
    result = det("task", "logs", "nope")
    assert (result.code, result.err) == (1, "Failed to fetch task logs: Forbidden: not your task\n")


def test_user_create_requires_admin_and_strong_password(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    weak = det("user", "create", "carol", "--password", "short")
    assert weak.code == 1 and "password must have at least 8 characters" in weak.err
    denied = det("user", "create", "carol", "--password", "Secret123")
    assert denied.err == "Failed to create user: Forbidden: only admins may create users\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert det("user", "login", "admin").code == 0
    assert det("user", "create", "carol", "--admin", "--password", "Secret123").code == 0
    assert fake_master.passwords["carol"] == salted("Secret123")
    assert det("user", "deactivate", "carol").code == 0
    listed = det("user", "list")
    assert "carol" not in listed.out and "carol" in det("user", "list", "--all").out
    # Determined's columns, the agent user and group last (N/A: none is set per user here).
    header = [cell.strip() for cell in listed.out.splitlines()[0].split("|")]
    assert header[-5:] == ["Remote", "Agent Uid", "Agent Gid", "Agent User", "Agent Group"]
    assert listed.out.splitlines()[2].split("|")[-1].strip() == "N/A"


def test_master_info_is_yaml_by_default(fake_master: FakeMaster, det: Det) -> None:
    assert "clusterName: test\n" in det("master", "info").out
    assert json.loads(det("master", "info", "--json").out)["masterId"] == "m1"


def test_resource_pool_list(fake_master: FakeMaster, det: Det) -> None:
    out = det("rp", "list").out.splitlines()
    assert out[0].startswith(" Name")
    assert out[2].split("|")[2].strip() == "STATIC"


def test_change_own_password_logs_in_again_with_the_new_one(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_master.add_user("alice", "Secret123")
    monkeypatch.setenv("DET_PASS", "Secret123")
    assert det("user", "login", "alice").code == 0
    monkeypatch.delenv("DET_PASS")
    assert det("user", "change-password", "--password", "Better456").code == 0
    assert fake_master.passwords["alice"] == salted("Better456")
    assert det("user", "whoami").out == "You are logged in as user 'alice'\n"
    edited = det("user", "edit", "alice", "--display-name", "Alice A.", "--active", "true")
    assert edited.out == "Changes made to the following fields: Display Name, Active\n"
    assert fake_master.users["alice"]["displayName"] == "Alice A."


def test_user_create_without_a_terminal_reads_the_password_from_stdin(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert det("user", "login", "admin").code == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("Secret123\n"))  # one line, no confirmation
    assert det("user", "create", "dave").code == 0
    assert fake_master.passwords["dave"] == salted("Secret123")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    empty = det("user", "create", "erin")
    assert empty.code == 1
    assert "--password" in empty.err and "stdin" in empty.err and "DET_PASS" not in empty.err
    assert "erin" not in fake_master.users


def test_user_rename_patches_the_username(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_master.add_user("carol", "Secret123")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert det("user", "login", "admin").code == 0
    renamed = det("user", "rename", "carol", "caroline")
    assert (renamed.code, renamed.out) == (0, "Renamed user 'carol' to 'caroline'\n")
    patch = [b for m, p, b in fake_master.requests if m == "PATCH"]
    assert patch == [{"username": "caroline"}]


def test_auth_login_whoami_logout_are_user_login_whoami_logout(
    fake_master: FakeMaster, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_master.add_user("alice", "Secret123")
    monkeypatch.setattr("sys.stdin", io.StringIO("Secret123\n"))
    assert det("auth", "login", "alice").code == 0
    assert det("auth", "whoami").out == "You are logged in as user 'alice'\n"
    assert det("auth", "logout").code == 0
    assert det("user", "whoami").out == "You are logged in as user 'determined'\n"


def test_version_prints_client_master_and_address_without_logging_in(
    fake_master: FakeMaster, det: Det
) -> None:
    result = det("version")
    assert result.code == 0, result.err
    shown = yaml.safe_load(result.out)
    assert set(shown) == {"client", "master", "master_address"}
    assert shown["master"]["clusterName"] == "test"
    assert shown["master_address"] == fake_master.url
    assert [p for _, p, _ in fake_master.requests] == ["/info"]


def test_version_with_no_master_leaves_the_master_blank_and_hints(
    cli_env: object, det: Det
) -> None:
    result = det("-m", "http://127.0.0.1:1", "version")
    assert result.code == 0
    assert yaml.safe_load(result.out)["master"] == {
        "cluster_id": "",
        "master_id": "",
        "version": "",
    }
    assert "Master not found at http://127.0.0.1:1" in result.err


def test_a_master_url_with_a_path_is_refused_before_anything_is_sent(
    cli_env: object, det: Det, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        det("-m", "localhost:8080/api/v1", "version")
    assert exited.value.code == 2
    assert "the master URL must not have a path ('/api/v1')" in capsys.readouterr().err


def test_resource_pool_list_shows_spend_against_the_budget_cap() -> None:
    from cli.resource_pool import POOL_HEADERS, pool_row

    elastic = {"name": "gpu", "provisioning": {"provider": "aws", "status": "2 instances"}}
    spend = POOL_HEADERS.index("Spend $/h")
    elastic["provisioning"] |= {"spendPerHour": 2.012, "maxCostPerHour": 8.0}
    assert pool_row(elastic)[spend] == "2.01 of 8"
    elastic["provisioning"] |= {"maxCostPerHour": None}
    assert pool_row(elastic)[spend] == "2.01"
    assert pool_row({"name": "static"})[spend] == ""
