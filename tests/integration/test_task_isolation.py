"""Issue 10, finding 1: one user's task must not read another task's token or the agent's.

A command of an ordinary user dumps every ``/proc/*/environ`` and ``/proc/*/cmdline`` it can and
lists the agent's work dir and the admin's running command's work dir. Under ``isolation: uid``
(what tests/integration/cluster.py starts agents with as root) it finds its own token only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import JOIN_TOKEN, Agent, Api, Master, running_cluster, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="per-task uids need an agent running as root"
)
PASSWORD = "Isolat10n-Test-Pw"
ISOLATION_REPORTED = "uid"


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


def hidden(literal: str) -> str:
    """A regex matching ``literal`` that does not contain it (the command line is dumped too)."""
    return f"{literal[0]}[{literal[1]}]{literal[2:]}"


def environ_of_task(task_id: str) -> dict[str, str]:
    """The environment of the process running ``task_id``, read as root from /proc."""
    for entry in Path("/proc").iterdir():
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        if env.get("DET_TASK_ID") == task_id:
            return env
    raise AssertionError(f"no process runs task {task_id}")


def test_a_task_cannot_read_another_tasks_token_nor_the_agents(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, (agent,) = cluster
    admin = Api(master)
    assert admin.agents()["agent-0"]["isolation"] == ISOLATION_REPORTED
    created = admin.post(
        "/api/v1/users", json={"user": {"username": "bob", "active": True}, "password": PASSWORD}
    )
    assert created.status_code == 200, created.text
    bob = Api(master, "bob", PASSWORD)

    victim = admin.run("echo started; sleep 120")
    wait_for("the admin's command to start", lambda: "started" in admin.task_output(victim))
    victim_env = environ_of_task(victim)
    victim_token = victim_env["DET_SESSION_TOKEN"]
    victim_dir = agent.work_dir / victim_env["DET_ALLOCATION_ID"]
    assert victim_dir.is_dir()

    thief = bob.run(
        "cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' "
        "| grep -E 'DET_SESSION_TOKEN|DET_AGENT_JOIN_TOKEN|" + hidden(JOIN_TOKEN) + "'; "
        f"ls -la {agent.work_dir} 2>&1; ls -la {victim_dir} 2>&1; "
        f"cat {victim_dir}/tmp/* 2>&1; id -u"
    )
    assert bob.wait_ended(thief)["allocations"][-1]["exitCode"] == 0
    output = bob.task_output(thief)
    text = "\n".join(output)
    assert victim_token not in text
    assert JOIN_TOKEN not in text
    # The dump itself works: it finds the thief's own token (in each of its processes) only.
    tokens = {line for line in output if line.startswith("DET_SESSION_TOKEN=")}
    assert len(tokens) == 1, output
    assert f"ls: cannot open directory '{agent.work_dir}': Permission denied" in output
    assert f"ls: cannot open directory '{victim_dir}': Permission denied" in output
    assert int(output[-1]) != victim_dir.stat().st_uid and int(output[-1]) >= 1000
    admin.post(f"/api/v1/commands/{victim}/kill")
