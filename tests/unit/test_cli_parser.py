"""``det``'s grammar: Determined's aliases, default verbs, global flags and config overrides."""

from __future__ import annotations

import argparse

import pytest

from cli import agent, cmd, user
from cli.errors import CliError
from cli.main import build_parser
from cli.parser import _DefaultVerb, generate_aliases


@pytest.fixture(autouse=True)
def _no_det_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DET_MASTER", "DET_MASTER_ADDR", "DET_USER", "DET_PASS"):
        monkeypatch.delenv(var, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_generate_aliases_like_determined() -> None:
    assert generate_aliases("c|heck|out co") == ("checkout", ["c", "check", "co"])
    assert generate_aliases("u|ser") == ("user", ["u"])
    assert generate_aliases("list ls") == ("list", ["ls"])


@pytest.mark.parametrize(
    ("argv", "func"),
    [
        (["agent", "list"], agent.list_agents),
        (["a", "ls"], agent.list_agents),
        (["slot", "list"], agent.list_slots),
        (["s", "ls"], agent.list_slots),
        (["u", "whoami"], user.whoami),
        (["user", "change-password"], user.change_password),
        (["cmd", "run", "echo"], cmd.run_command),
        (["command", "kill", "x"], cmd.kill_commands),
    ],
)
def test_nouns_and_aliases(argv: list[str], func: object) -> None:
    assert parse(*argv).func is func


def test_bare_noun_runs_its_default_verb_with_that_verbs_defaults() -> None:
    args = parse("agent")
    assert isinstance(args.func, _DefaultVerb) and args.func.func is agent.list_agents
    filled = args.func.parser.parse_args([], args)
    assert (filled.json, filled.csv) == (False, False)
    assert args.action == "list agents"


def test_master_defaults_to_localhost_and_is_canonicalized() -> None:
    assert parse("agent", "list").master == "http://localhost:8080"
    assert parse("-m", "10.1.2.3", "agent", "list").master == "http://10.1.2.3:8080"


def test_master_comes_from_det_master(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DET_MASTER", "https://det.example.com")
    assert parse("agent", "list").master == "https://det.example.com:443"


def test_invalid_master_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("-m", "http://u:p@host", "agent", "list")
    assert exited.value.code == 2
    assert "invalid master url" in capsys.readouterr().err


def test_user_flag() -> None:
    assert parse("-u", "alice", "user", "whoami").user == "alice"
    assert parse("user", "whoami").user is None


def test_json_and_csv_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("agent", "list", "--json", "--csv")


def test_cmd_run_keeps_everything_after_the_entrypoint() -> None:
    args = parse("cmd", "run", "--config", "resources.slots=2", "-d", "python", "-c", "print(1)")
    assert args.detach is True
    assert args.config == ["resources.slots=2"]
    assert args.entrypoint == ["python", "-c", "print(1)"]


def test_deploy_local_flags() -> None:
    args = parse("deploy", "local", "cluster-up", "--agents", "2", "--master-port", "9090")
    assert (args.agents, args.port, args.slots_per_agent, args.no_gpu) == (2, 9090, 1, False)
    assert parse("d", "local", "cluster-down", "--delete-db").delete_db is True


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["resources.slots=2"], {"resources": {"slots": 2}}),
        (["description=hello world"], {"description": "hello world"}),
        (
            ["resources.slots=1", "resources.priority=10"],
            {"resources": {"slots": 1, "priority": 10}},
        ),
        (["environment.variables=A=1,B=2"], {"environment": {"variables": ["A=1", "B=2"]}}),
        (["x={a: 1}"], {"x": {"a": 1}}),
        (
            ["bind_mounts={host_path: /a, container_path: /b}"],
            {"bind_mounts": [{"host_path": "/a", "container_path": "/b"}]},
        ),
    ],
)
def test_config_overrides_like_determined(overrides: list[str], expected: dict) -> None:
    assert cmd.parse_config_overrides({}, overrides) == expected


def test_config_override_needs_an_equals_sign() -> None:
    with pytest.raises(CliError, match="expected key=value"):
        cmd.parse_config_overrides({}, ["resources.slots"])


def test_run_needs_an_entrypoint() -> None:
    args = parse("cmd", "run", "--config", "resources.slots=1")
    with pytest.raises(CliError, match="no entrypoint"):
        cmd.build_config(args)


def test_single_argument_entrypoint_is_a_shell_string() -> None:
    assert cmd.build_config(parse("cmd", "run", "echo hi && ls"))["entrypoint"] == "echo hi && ls"
    assert cmd.build_config(parse("cmd", "run", "echo", "hi"))["entrypoint"] == ["echo", "hi"]
