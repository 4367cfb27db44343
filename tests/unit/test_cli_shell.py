"""``det shell`` against the fake master: the ssh command line, the key file, start and open.

ssh itself is replaced by a recorder here; ``test_cli_shell_ssh.py`` runs the real one.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli import shell
from tests.unit.test_cli_fake_master import Result, cli_env_fixture, det_fixture  # noqa: F401
from tests.unit.test_cli_service import (  # noqa: F401  (fixtures by name)
    PRIVATE_KEY,
    ServiceFake,
    _id,
    detail,
    fake_fixture,
)

Det = Callable[..., Result]
SHELL_ID = _id(1)


@pytest.fixture(name="ssh_runs")
def ssh_runs_fixture(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record ssh invocations instead of running them; each exits 7."""
    runs: list[list[str]] = []

    def fake_run(argv: list[str], check: bool = False) -> subprocess.CompletedProcess[Any]:
        runs.append(argv)
        return subprocess.CompletedProcess(argv, 7)

    monkeypatch.setattr(shell.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(shell.subprocess, "run", fake_run)
    return runs


def expected_ssh(master: str, key: Path, user: str = "alice") -> list[str]:
    return [
        "ssh",
        "-o",
        f"ProxyCommand={shlex.quote(sys.executable)} -m cli.tunnel {master} %h",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-tt",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(key),
        f"{user}@{SHELL_ID}",
    ]


def test_start_waits_runs_ssh_and_exits_with_its_code(
    fake: ServiceFake, det: Det, ssh_runs: list[list[str]], cli_env: Path
) -> None:
    fake.next_progression = [
        detail("QUEUED", waiting="waiting for an agent"),
        detail("STARTING", agents=("agent-1",)),
        detail("RUNNING", ready=True),
    ]
    result = det("shell", "start", "--config", "resources.slots=0", "--", "-L", "8888:x:8888")
    assert result.code == 7
    key = cli_env / "shells" / SHELL_ID / "key"
    assert ssh_runs == [[*expected_ssh(fake.url, key), "-L", "8888:x:8888"]]
    assert fake.posts("/api/v1/shells") == [{"config": {"resources": {"slots": 0}}}]
    assert result.err.splitlines() == [
        f"Launched shell (id: {SHELL_ID}, name: Shell (fake)).",
        "waiting to be scheduled: waiting for an agent",
        "starting on agent agent-1",
        f"To reconnect, run: det shell open {SHELL_ID}",
    ]
    assert result.out == ""


def test_key_file_is_written_0600_in_a_0700_directory(
    fake: ServiceFake, det: Det, ssh_runs: list[list[str]], cli_env: Path
) -> None:
    assert det("shell", "start").code == 7
    key = cli_env / "shells" / SHELL_ID / "key"
    assert key.read_text() == PRIVATE_KEY + "\n"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700


def test_show_ssh_command_uses_the_master_url_given_and_the_key_path(
    fake: ServiceFake, det: Det, cli_env: Path
) -> None:
    assert det("shell", "start", "-d").code == 0
    port = fake.url.rsplit(":", 1)[1]
    result = det("-m", f"127.0.0.1:{port}", "shell", "show-ssh-command", "00000001")
    assert result.code == 0, result.err
    argv = shlex.split(result.out)
    key = cli_env / "shells" / SHELL_ID / "key"
    assert argv == expected_ssh(f"http://127.0.0.1:{port}", key)
    assert "localhost" not in result.out
    assert key.stat().st_mode & 0o777 == 0o600

    # Determined's spelling, and ssh arguments after --
    extra = det("shell", "show_ssh_command", SHELL_ID, "--", "nvidia-smi")
    assert shlex.split(extra.out)[-2:] == [f"alice@{SHELL_ID}", "nvidia-smi"]


def test_root_is_the_user_when_the_master_names_none(fake: ServiceFake, det: Det) -> None:
    fake.ssh_user = None
    det("shell", "start", "-d")
    assert f"root@{SHELL_ID}" in shlex.split(det("shell", "show-ssh-command", SHELL_ID).out)


def test_open_expands_the_prefix_and_passes_ssh_arguments(
    fake: ServiceFake, det: Det, ssh_runs: list[list[str]]
) -> None:
    det("shell", "start", "-d")
    result = det("shell", "open", "00000001", "--", "ls", "-l")
    assert result.code == 7
    assert ssh_runs[0][-3:] == [f"alice@{SHELL_ID}", "ls", "-l"]
    assert result.err.endswith(f"To reconnect, run: det shell open {SHELL_ID}\n")


def test_show_ssh_command_flag_prints_before_running(
    fake: ServiceFake, det: Det, ssh_runs: list[list[str]]
) -> None:
    result = det("shell", "start", "--show-ssh-command")
    assert shlex.split(result.out) == ssh_runs[0]


def test_ssh_killed_by_a_signal_exits_like_a_shell(
    fake: ServiceFake, det: Det, monkeypatch: pytest.MonkeyPatch, ssh_runs: list[list[str]]
) -> None:
    monkeypatch.setattr(
        shell.subprocess, "run", lambda argv, check=False: subprocess.CompletedProcess(argv, -15)
    )
    assert det("shell", "start").code == 143


def test_missing_ssh_is_reported_before_launching(
    fake: ServiceFake, det: Det, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shell.shutil, "which", lambda name: None)
    result = det("shell", "start")
    assert result.code == 1
    assert result.err.startswith("ssh is not installed")
    assert "apt-get install openssh-client" in result.err
    assert fake.posts("/api/v1/shells") == []
    # Detached, no ssh is needed.
    assert det("shell", "start", "-d").code == 0


def test_someone_elses_shell_has_no_key(
    fake: ServiceFake, det: Det, ssh_runs: list[list[str]]
) -> None:
    det("shell", "start", "-d")
    fake.services["shells"][SHELL_ID]["username"] = "admin"
    result = det("shell", "open", SHELL_ID)
    assert result.code == 1
    assert result.err == (
        f"the master gave no private key for shell {SHELL_ID}: only its owner (admin) can "
        "connect to it\n"
    )
    assert ssh_runs == []


def test_shell_that_ends_before_ready_does_not_run_ssh(
    fake: ServiceFake, det: Det, ssh_runs: list[list[str]]
) -> None:
    fake.next_progression = [detail("TERMINATED", ended=True, exit_reason="killed by admin")]
    fake.logs[SHELL_ID] = ["sshd: no host keys"]
    result = det("shell", "start")
    assert result.code == 1
    assert "sshd: no host keys\n" in result.err
    assert result.err.endswith(f"Shell {SHELL_ID} has ended: killed by admin\n")
    assert ssh_runs == []


def test_list_hides_keys_and_kill_works(fake: ServiceFake, det: Det) -> None:
    det("shell", "start", "-d")
    assert "PRIVATE KEY" not in det("shell", "describe", SHELL_ID, "--json").out
    assert det("shell", "list", "-q").out == f"{SHELL_ID}\n"
    assert det("shell", "kill", SHELL_ID).out == f"Killed shell {SHELL_ID}\n"
    fake.logs[SHELL_ID] = ["a", "b", "c"]
    assert det("shell", "logs", SHELL_ID, "--tail", "2").out == "b\nc\n"
