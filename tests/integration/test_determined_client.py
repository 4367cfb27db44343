"""Determined's own CLI (``determined==0.38.1``) against a real master and agent.

Determined's CLI pins an old ``requests``, so it lives in a venv of its own, named by
``FLOTILLA_DETERMINED_VENV`` (``scripts/test`` creates ``.venv-determined`` and sets it). Unset,
these tests skip; set to a venv without a working ``det`` 0.38.1, they fail.

How that CLI behaves, and so what the tests feed it:

- ``det user login`` ignores ``DET_PASS`` and reads the password with ``getpass``, which without
  a terminal reads one line from stdin (and warns that it may be echoed: not an error);
  ``det user create`` and ``det user change-password`` prompt twice (password, confirmation).
- Tokens are cached in ``$XDG_CONFIG_HOME/determined/auth.json``; every run here gets its own
  HOME and XDG_CONFIG_HOME so nothing leaks between tests or from the machine.
- Every command first reads ``/info``; a version other than 0.38.1 makes it warn
  "Master version ... is less than CLI version" (or the reverse) on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for

DETERMINED_VERSION = "0.38.1"
VENV_ENV = "FLOTILLA_DETERMINED_VENV"
DET_TIMEOUT_SECONDS = 60
# Satisfies Determined's client-side complexity rules: 8+ characters, upper, lower, digit.
ALICE_PASSWORD = "Passw0rdAlice"
ALICE_NEW_PASSWORD = "NewPassw0rdAlice"


@pytest.fixture(scope="module")
def determined_det() -> Path:
    """Determined's ``det`` from ``$FLOTILLA_DETERMINED_VENV``, checked to be 0.38.1."""
    venv = os.environ.get(VENV_ENV)
    if not venv:
        pytest.skip(f"{VENV_ENV} is not set (scripts/test creates .venv-determined and sets it)")
    det = Path(venv) / "bin" / "det"
    if not det.is_file():
        pytest.fail(
            f"{VENV_ENV}={venv} has no bin/det: pip install determined=={DETERMINED_VERSION}"
        )
    version = subprocess.run(
        [str(det), "--version"], capture_output=True, text=True, timeout=DET_TIMEOUT_SECONDS
    )
    if version.returncode != 0 or DETERMINED_VERSION not in version.stdout:
        pytest.fail(
            f"{det} --version gave code {version.returncode}, stdout {version.stdout!r}, "
            f"stderr {version.stderr[-2000:]!r}; expected det {DETERMINED_VERSION}"
        )
    return det


class DeterminedCli:
    """Runs Determined's ``det -m <master>`` with its own HOME and token cache."""

    def __init__(self, det: Path, master: Master, home: Path) -> None:
        self.det = det
        self.master = master
        self.config_home = home / "xdg"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DET_")}
        self.env = {**env, "HOME": str(home), "XDG_CONFIG_HOME": str(self.config_home)}
        home.mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.det), "-m", self.master.url, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=DET_TIMEOUT_SECONDS,
            start_new_session=True,  # no controlling terminal: getpass reads stdin
        )
        described = f"det {' '.join(args)}: code {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr, described
        assert "Master version" not in result.stderr, described
        assert "is less than" not in result.stderr, described
        return result

    def ok(self, *args: str, stdin: str = "") -> str:
        """Run a command that must succeed; return its stdout."""
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, f"det {' '.join(args)}: {result.stderr}\n{result.stdout}"
        return result.stdout

    def login(self, username: str, password: str) -> None:
        self.ok("user", "login", username, stdin=password + "\n")

    def cached_session(self) -> dict[str, object]:
        store = json.loads((self.config_home / "determined" / "auth.json").read_text())
        session: dict[str, object] = store["masters"][self.master.url]
        return session


def table(stdout: str) -> list[dict[str, str]]:
    """Rows of a ``tabulate`` table (header, dashes, rows) as dicts keyed by the header."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = [cell.strip() for cell in lines[0].split("|")]
    assert set(lines[1]) <= {"-", "+"}, stdout
    return [
        dict(zip(header, (c.strip() for c in line.split("|")), strict=True)) for line in lines[2:]
    ]


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


@pytest.fixture
def det(determined_det: Path, cluster: tuple[Master, list[Agent]], tmp_path: Path) -> DeterminedCli:
    master, _ = cluster
    return DeterminedCli(determined_det, master, tmp_path / "home")


def test_admin_logs_in_with_a_blank_password_and_reads_the_cluster(det: DeterminedCli) -> None:
    det.login("admin", "")
    assert det.cached_session()["active_user"] == "admin"

    info = yaml.safe_load(det.ok("master", "info"))
    assert info["version"] == DETERMINED_VERSION
    assert info["clusterId"] and info["masterId"]

    agents = table(det.ok("agent", "list"))
    assert [(a["Agent ID"], a["Slots"], a["Enabled"]) for a in agents] == [("agent-0", "2", "True")]

    slots = table(det.ok("slot", "list"))
    assert [(s["Agent ID"], s["Slot ID"], s["Allocation ID"], s["Type"]) for s in slots] == [
        ("agent-0", "0", "FREE", "cpu"),
        ("agent-0", "1", "FREE", "cpu"),
    ]

    users = {u["Username"]: u for u in table(det.ok("user", "list"))}
    assert users.keys() == {"admin", "determined"}
    assert users["admin"]["Admin"] == "True" and users["determined"]["Admin"] == "False"


def test_slot_list_names_the_allocation_in_a_busy_slot(
    det: DeterminedCli, cluster: tuple[Master, list[Agent]]
) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = api.run("sleep 300")
    wait_for("the command to run", lambda: api.task(task_id)["allocations"][0]["isReady"])
    det.login("admin", "")
    busy = [s for s in table(det.ok("slot", "list")) if s["Allocation ID"] != "FREE"]
    assert [(s["Allocation ID"], s["Task Name"]) for s in busy] == [(f"{task_id}.1", "Command")]
    agent = json.loads(det.ok("agent", "list", "--json"))[0]
    assert (agent["id"], agent["num_containers"]) == ("agent-0", 1)
    assert api.post(f"/api/v1/commands/{task_id}/kill").status_code == 200


def test_user_create_login_whoami_and_change_password(det: DeterminedCli) -> None:
    det.login("admin", "")
    det.ok("user", "create", "alice", stdin=f"{ALICE_PASSWORD}\n{ALICE_PASSWORD}\n")
    det.ok("user", "create", "bob", "--password", ALICE_PASSWORD)
    users = {u["Username"]: u for u in table(det.ok("user", "list"))}
    assert users["alice"]["Active"] == "True" and users["alice"]["Admin"] == "False"
    assert "bob" in users

    det.login("alice", ALICE_PASSWORD)
    assert det.ok("user", "whoami") == "You are logged in as user 'alice'\n"

    forbidden = det("user", "create", "eve", "--password", ALICE_PASSWORD)
    assert forbidden.returncode == 1
    assert "Forbidden" in forbidden.stderr

    det.ok("user", "change-password", stdin=f"{ALICE_NEW_PASSWORD}\n{ALICE_NEW_PASSWORD}\n")
    assert det.ok("user", "whoami") == "You are logged in as user 'alice'\n"

    old = det("user", "login", "alice", stdin=ALICE_PASSWORD + "\n")
    assert old.returncode == 1
    assert "Failed to log in user" in old.stderr and "invalid credentials" in old.stderr
    unknown = det("user", "login", "nobody", stdin="Passw0rdNobody\n")
    assert unknown.returncode == 1
    assert "invalid credentials" in unknown.stderr

    det.ok("user", "logout")
    det.login("alice", ALICE_NEW_PASSWORD)
    assert det.ok("user", "whoami") == "You are logged in as user 'alice'\n"
    assert det.cached_session()["active_user"] == "alice"


def test_cmd_run_detached_then_listed(
    det: DeterminedCli, cluster: tuple[Master, list[Agent]]
) -> None:
    master, _ = cluster
    det.login("admin", "")
    command_id = det.ok("cmd", "run", "-d", "echo hi").strip()
    Api(master).wait_ended(command_id)
    assert command_id in det.ok("cmd", "list")


def test_shell_start_runs_a_command_over_ssh_through_the_proxy(
    det: DeterminedCli, cluster: tuple[Master, list[Agent]]
) -> None:
    """Determined's `det shell start -- echo hi`: POST /api/v1/shells, poll the task until
    ready, then its own `ssh` with `python -m determined.cli.tunnel` as ProxyCommand, which
    opens the proxy's WebSocket without credentials (the shell's key authenticates)."""
    master, _ = cluster
    det.login("admin", "")
    result = det("shell", "start", "--", "echo", "hi")
    assert result.returncode == 0, result.stderr
    assert "hi" in [line.strip() for line in result.stdout.splitlines()], result.stdout
    shells = Api(master).get("/api/v1/shells").json()["shells"]
    assert len(shells) == 1 and shells[0]["state"] == "STATE_RUNNING"
    assert "privateKey" not in shells[0]


def test_experiment_created_from_a_determined_config_and_listed(
    det: DeterminedCli, cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    """Determined's `det experiment create const.yaml .` and `det experiment list`."""
    master, _ = cluster
    det.login("admin", "")
    context = tmp_path / "model"
    context.mkdir()
    (context / "train.py").write_text("print('trained')\n")
    config = {
        "name": "from-determined",
        "entrypoint": "python3 train.py",
        "searcher": {"name": "single", "metric": "loss", "max_length": {"batches": 1}},
        "max_restarts": 0,
    }
    (context / "const.yaml").write_text(yaml.safe_dump(config))
    created = det.ok("experiment", "create", str(context / "const.yaml"), str(context))
    assert "Created experiment 1" in created
    listed = det.ok("experiment", "list")
    assert "from-determined" in listed
    experiment = Api(master).get("/api/v1/experiments/1").json()["experiment"]
    assert experiment["name"] == "from-determined"


def test_version_and_user_rename(det: DeterminedCli) -> None:
    shown = yaml.safe_load(det.ok("version"))
    assert shown["client"]["version"] == DETERMINED_VERSION
    assert shown["master"]["version"] == DETERMINED_VERSION and shown["master"]["clusterId"]
    assert shown["master_address"] == det.master.url

    det.login("admin", "")
    det.ok("user", "create", "carol", "--password", ALICE_PASSWORD)
    det.ok("user", "rename", "carol", "caroline")
    users = {u["Username"] for u in table(det.ok("user", "list"))}
    assert "caroline" in users and "carol" not in users
