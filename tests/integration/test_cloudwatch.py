"""CloudWatch log shipping on a real cluster (master + agent processes, SQLite and PostgreSQL)
against a moto server: the group and streams, task output, throttling, and a killed agent.

Throttling is injected inside the master and agent processes with the test-only variable
``FLOTILLA_TEST_CLOUDWATCH_THROTTLES`` (see ``agent/cloudwatch/faults.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cloudwatch.faults import THROTTLES_ENV
from tests.integration.cluster import Agent, Api, Master, wait_for
from tests.moto_logs import CREDENTIALS, REGION, logs_reader, moto_server, stream_messages

SHIPPED = 45.0  # seconds to wait for lines: the 5 s flush interval, retries, slow CI


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # inherited by the master and agent processes
    with moto_server() as url:
        yield url


def settings(endpoint: str, **extra: Any) -> dict[str, Any]:
    return {"type": "cloudwatch", "region": REGION, "endpoint_url": endpoint, **extra}


@contextmanager
def cluster(
    tmp_path: Path,
    db_url: str,
    endpoint: str,
    master_env: dict[str, str] | None = None,
    agent_env: dict[str, str] | None = None,
) -> Iterator[tuple[Master, Agent, Api, str]]:
    """A master shipping its and its tasks' logs (retention 14 days) and one agent shipping its
    own; yields them, an API client and the log group, ``/flotilla/<cluster-id>``."""
    master = Master(
        tmp_path, db_url, logging=settings(endpoint, retention_days=14, ship_task_logs=True)
    )
    master.env = master_env
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(yaml.safe_dump({"logging": settings(endpoint)}))
    agent = Agent(tmp_path, master, "agent-0", config=str(agent_yaml))
    agent.env = {**(agent.env or {}), **(agent_env or {})}  # keep the join token
    try:
        master.start()
        agent.start()
        api = Api(master)
        wait_for("the agent to join", lambda: "agent-0" in api.agents(), logs=logs(master, agent))
        group = f"/flotilla/{api.get('/info').json()['clusterId']}"
        yield master, agent, api, group
    finally:
        agent.stop()
        master.stop()


def logs(master: Master, agent: Agent) -> list[Path]:
    return [master.log_path, agent.log_path]


def messages(endpoint: str, group: str, stream: str) -> list[str]:
    return stream_messages(logs_reader(endpoint), group, stream)


def containing(text: str, found: list[str]) -> list[str]:
    return [message for message in found if text in message]


def test_group_streams_and_a_commands_output_reach_cloudwatch(
    tmp_path: Path, db_url: str, endpoint: str
) -> None:
    with cluster(tmp_path, db_url, endpoint) as (master, agent, api, group):
        reader = logs_reader(endpoint)
        described = wait_for(
            "the log group",
            lambda: reader.describe_log_groups(logGroupNamePrefix=group)["logGroups"],
            logs=logs(master, agent),
        )
        assert [(g["logGroupName"], g.get("retentionInDays")) for g in described] == [(group, 14)]
        task_id = api.run("echo hello from a task; echo and from stderr >&2")
        assert api.wait_ended(task_id)["allocations"][-1]["exitCode"] == 0
        task_lines = wait_for(
            "the command's output in its task stream",
            lambda: len(found := messages(endpoint, group, f"task/{task_id}")) >= 2 and found,
            SHIPPED,
            logs(master, agent),
        )
        assert containing("hello from a task", task_lines) == ["hello from a task"]
        assert containing("and from stderr", task_lines) == ["and from stderr"]
        wait_for(
            "the master's and the agent's own lines",
            lambda: (
                containing(" up at ", messages(endpoint, group, "master"))
                and containing(
                    "connected to the master as agent-0", messages(endpoint, group, "agent/agent-0")
                )
            ),
            SHIPPED,
            logs(master, agent),
        )


def test_every_line_arrives_exactly_once_while_cloudwatch_throttles(
    tmp_path: Path, db_url: str, endpoint: str
) -> None:
    throttled = {THROTTLES_ENV: "5"}  # the first five PutLogEvents of each process fail
    with cluster(tmp_path, db_url, endpoint, throttled, throttled) as (master, agent, api, group):
        task_id = api.run("for i in $(seq 1 3000); do echo line $i; done")
        assert api.wait_ended(task_id)["allocations"][-1]["exitCode"] == 0
        expected = [f"line {i}" for i in range(1, 3001)]

        def task_output() -> list[str]:
            found = messages(endpoint, group, f"task/{task_id}")
            return [m for m in found if m.startswith("line ")]

        wait_for("3000 lines", lambda: len(task_output()) >= 3000, SHIPPED, logs(master, agent))
        assert task_output() == expected
        agent_lines = wait_for(
            "the agent's lines",
            lambda: containing(
                "connected to the master", messages(endpoint, group, "agent/agent-0")
            ),
            SHIPPED,
            logs(master, agent),
        )
        assert len(agent_lines) == 1
    for process in (master, agent):
        counters = re.search(
            r"CloudWatch shipping stopped: shipped (\d+), retried (\d+)",
            process.log_path.read_text(),
        )
        assert counters is not None, f"{process.log_path.name} has no shipping counters"
        assert int(counters.group(2)) >= 5, "every throttled call retried at least one line"


def test_a_killed_agent_ships_what_it_had_spooled_after_a_restart(
    tmp_path: Path, db_url: str, endpoint: str
) -> None:
    down = {THROTTLES_ENV: "1000000"}  # CloudWatch refuses everything the first agent sends
    with cluster(tmp_path, db_url, endpoint, agent_env=down) as (master, agent, _, group):
        spool = tmp_path / "agent-agent-0" / ".cloudwatch-spool"
        wait_for(
            "the agent's lines in its spool",
            lambda: any(
                b"connected to the master" in p.read_bytes() for p in spool.glob("*.spool")
            ),
            logs=logs(master, agent),
        )
        assert messages(endpoint, group, "agent/agent-0") == []
        agent.kill()  # SIGKILL: no chance to flush
        agent.env = {k: v for k, v in (agent.env or {}).items() if k == "DET_AGENT_JOIN_TOKEN"}
        agent.start()

        def shipped() -> list[str]:
            found = messages(endpoint, group, "agent/agent-0")
            return containing("connected to the master as agent-0", found)

        wait_for("both runs' lines", lambda: len(shipped()) >= 2, SHIPPED, logs(master, agent))
        found = messages(endpoint, group, "agent/agent-0")
        story = [
            "start" if "agent agent-0 (version" in m else "connected"
            for m in found
            if "agent agent-0 (version" in m or "connected to the master as agent-0" in m
        ]
        assert story == ["start", "connected", "start", "connected"], "each run's lines, once"
