"""``det slot enable|disable``: a disabled slot takes no new work, and says so in the slot list
(our CLI and Determined's)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for
from tests.integration.test_cli import Cli, table


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


def test_a_disabled_slot_takes_no_new_work_until_enabled(
    cluster: tuple[Master, list[Agent]], tmp_path: Path
) -> None:
    master, _ = cluster
    api = Api(master)
    det = Cli(tmp_path / "home", master.url)
    det.ok("user", "login", "admin", env={"DET_PASS": ""})

    assert det.ok("slot", "disable", "agent-0", "1") == "Disabled slot 1 of agent agent-0\n"
    slots = {s["Slot ID"]: s for s in table(det.ok("slot", "list"))}
    assert (slots["0"]["Enabled"], slots["1"]["Enabled"]) == ("True", "False")

    both = api.run("sleep 300", slots=2)
    time.sleep(1.0)
    assert api.task(both)["allocations"][0]["state"] == "STATE_QUEUED"
    missing = det("slot", "disable", "agent-0", "7")
    assert missing.returncode == 1 and "has no slot 7 (its slots: [0, 1])" in missing.stderr

    assert det.ok("slot", "enable", "agent-0", "1") == "Enabled slot 1 of agent agent-0\n"
    wait_for("the two-slot command to run", lambda: api.task(both)["allocations"][0]["isReady"])

    venv = os.environ.get("FLOTILLA_DETERMINED_VENV")
    if venv:  # Determined's own CLI: same paths, same message
        home = tmp_path / "det-home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DET_")}
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"))
        argv = [str(Path(venv) / "bin" / "det"), "-m", master.url]

        def determined(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*argv, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
            )

        login = determined("user", "login", "admin", stdin="\n")
        assert login.returncode == 0, login.stderr
        disabled = determined("slot", "disable", "agent-0", "0")
        assert disabled.stdout == "Disabled slot 0 of agent agent-0\n", disabled.stderr
        # Not drained: what ran on it was killed.
        wait_for("the command to end", lambda: api.task(both)["allocations"][0]["endTime"])
        enabled = determined("slot", "enable", "agent-0", "0")
        assert enabled.stdout == "Enabled slot 0 of agent agent-0\n", enabled.stderr
    assert api.post(f"/api/v1/commands/{both}/kill").status_code == 200
