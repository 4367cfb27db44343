"""The token cache and the choice of user, as Determined's CLI makes it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cli.errors import CliError
from cli.main import describe_error
from cli.session import (
    TokenStore,
    choose_user,
    env_password_for,
    flotilla_home,
    prompt_password,
)
from harness.client import ForbiddenError, MasterUnreachableError, UnauthenticatedError
from tests.unit.test_cli_fake_master import cli_env_fixture  # noqa: F401  (fixture by name)

MASTER = "http://m:8080"
pytestmark = pytest.mark.usefixtures("cli_env")


def test_flotilla_home_comes_from_the_environment(cli_env: Path) -> None:
    assert flotilla_home() == cli_env


def test_token_store_layout_and_permissions(cli_env: Path) -> None:
    store = TokenStore("m")  # canonicalised to MASTER
    store.set_token("alice", "t1")
    store.set_active("alice")
    TokenStore("other:1").set_token("bob", "t2")
    path = cli_env / "auth.json"
    assert json.loads(path.read_text()) == {
        "version": 2,
        "masters": {
            MASTER: {"active_user": "alice", "tokens": {"alice": "t1"}},
            "http://other:1": {"tokens": {"bob": "t2"}},
        },
    }
    assert path.stat().st_mode & 0o777 == 0o600
    assert cli_env.stat().st_mode & 0o777 == 0o700
    assert TokenStore(MASTER).get_token("alice") == "t1"
    assert TokenStore(MASTER).get_all_users() == ["alice"]


def test_drop_user_and_clear_active() -> None:
    store = TokenStore(MASTER)
    store.set_token("alice", "t1")
    store.set_active("alice")
    store.clear_active()
    store.drop_user("alice")
    assert (store.get_active_user(), store.get_token("alice")) == (None, None)


def test_active_user_needs_a_token() -> None:
    with pytest.raises(CliError, match="det user login"):
        TokenStore(MASTER).set_active("nobody")


def test_corrupt_cache_is_deleted_with_a_clear_message(cli_env: Path) -> None:
    cli_env.mkdir(parents=True)
    (cli_env / "auth.json").write_text("{not json")
    with pytest.raises(CliError, match="corrupt and has been deleted"):
        TokenStore(MASTER).get_token("alice")
    assert not (cli_env / "auth.json").exists()


def test_user_order_explicit_then_env_pair_then_active_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = TokenStore(MASTER)
    assert choose_user(None, store) == ("determined", "", True)
    monkeypatch.setenv("DET_USER", "envuser")
    assert choose_user(None, store) == ("envuser", None, False)
    store.set_token("alice", "t")
    store.set_active("alice")
    assert choose_user(None, store) == ("alice", None, False)
    monkeypatch.setenv("DET_PASS", "pw")
    assert choose_user(None, store) == ("envuser", "pw", False)
    assert choose_user("explicit", store) == ("explicit", None, False)


def test_det_pass_is_only_used_for_its_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DET_PASS", "pw")
    assert env_password_for("anyone") == "pw"
    monkeypatch.setenv("DET_USER", "alice")
    assert env_password_for("alice") == "pw"
    assert env_password_for("bob") is None


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            MasterUnreachableError("http://m:8080", "connection refused"),
            "cannot reach the master at http://m:8080: connection refused",
        ),
        (ForbiddenError(403, "needs admin"), "Failed to list agents: Forbidden: needs admin"),
        (
            UnauthenticatedError(401, "expired"),
            "Failed to list agents: Unauthenticated: Please use 'det user login <username>' for "
            "password login.",
        ),
        (CliError("plain"), "plain"),
        (KeyError("x"), "Failed to list agents: KeyError: 'x'"),
    ],
)
def test_errors_become_one_line(error: Exception, line: str) -> None:
    assert describe_error("list agents", error) == line


def test_a_password_is_read_from_stdin_without_a_terminal_and_its_absence_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Passw0rd1\n"))
    assert prompt_password("Password for user 'admin': ") == "Passw0rd1"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(CliError) as raised:
        prompt_password("Password for user 'admin': ")
    assert str(raised.value) == (
        "Password for user 'admin': none given and none can be prompted for (no terminal); "
        "set DET_PASS, or write the password as one line to stdin"
    )
