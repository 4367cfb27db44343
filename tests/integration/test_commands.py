"""Commands on a real cluster: master + agent processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Agent, Api, Master, running_cluster, wait_for


@pytest.fixture
def cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, list[Agent]]]:
    yield from running_cluster(tmp_path, db_url, agents=1, slots=2)


def test_command_output_and_exit_code(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    # A NUL byte in output is stored as U+FFFD: PostgreSQL's text cannot hold NUL.
    task_id = api.run("printf 'a\\000b\\n'; echo hello; echo oops >&2; exit 3")
    allocation = api.wait_ended(task_id)["allocations"][-1]
    assert allocation["exitCode"] == 3
    assert allocation["exitReason"] == "exited with code 3"
    entries = [e for e in api.logs(task_id) if e["source"] == "task"]
    assert [(e["stdtype"], e["message"]) for e in entries] == [
        ("stdout", "a\ufffdb"),
        ("stdout", "hello"),
        ("stderr", "oops"),
    ]
    assert all(e["agentId"] == "agent-0" for e in entries)


def test_task_environment_names_the_master_and_a_working_session(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    script = (
        'curl -sf -H "Authorization: Bearer $DET_SESSION_TOKEN" "$DET_MASTER/api/v1/me" '
        "|| python3 -c \"import os,urllib.request as u; r=u.Request(os.environ['DET_MASTER']"
        "+'/api/v1/me', headers={'Authorization': 'Bearer '+os.environ['DET_SESSION_TOKEN']});"
        'print(u.urlopen(r).read().decode())"; echo; echo alloc=$DET_ALLOCATION_ID'
    )
    task_id = api.run(script)
    assert api.wait_ended(task_id)["allocations"][-1]["exitCode"] == 0
    output = "\n".join(api.task_output(task_id))
    assert '"username":"admin"' in output.replace(" ", "")
    assert f"alloc={task_id}.1" in output


def test_context_files_are_in_the_working_directory(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    files = [
        {"path": "pkg", "type": 53, "content": ""},
        {"path": "pkg/data.txt", "type": 48, "content": base64.b64encode(b"payload").decode()},
    ]
    response = api.post(
        "/api/v1/commands", json={"config": {"entrypoint": "cat pkg/data.txt"}, "files": files}
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["command"]["id"]
    assert api.wait_ended(task_id)["allocations"][0]["exitCode"] == 0
    assert api.task_output(task_id) == ["payload"]
    escaping = [{"path": "../evil", "type": 48, "content": ""}]
    rejected = api.post(
        "/api/v1/commands", json={"config": {"entrypoint": "true"}, "files": escaping}
    )
    assert rejected.status_code == 400
    assert "files.0.path" in rejected.json()["message"]


def test_follow_streams_until_the_task_ends(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = api.run("for i in 1 2 3; do echo line$i; sleep 0.5; done")
    lines = [e["message"] for e in api.logs(task_id, follow=True) if e["source"] == "task"]
    assert lines == ["line1", "line2", "line3"]
    assert api.task(task_id)["endTime"]


def test_kill_a_running_command(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = api.run("sleep 300")
    wait_for("the command to run", lambda: api.task(task_id)["allocations"][0]["isReady"])
    killed = api.post(f"/api/v1/commands/{task_id}/kill")
    assert killed.status_code == 200
    allocation = api.wait_ended(task_id)["allocations"][-1]
    assert allocation["exitReason"].startswith("killed by admin")
    assert allocation["exitCode"] is not None and allocation["exitCode"] < 0
    assert api.get("/api/v1/commands").json()["commands"][0]["state"] == "STATE_TERMINATED"


def test_too_large_for_its_pool_is_rejected_with_the_reason(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    response = api.post(
        "/api/v1/commands", json={"config": {"entrypoint": "true", "resources": {"slots": 8}}}
    )
    assert response.status_code == 400
    assert (
        "requests 8 slots on one agent, but the largest agent in resource pool 'default' has 2"
        in response.json()["message"]
    )
    commands = api.get("/api/v1/commands").json()["commands"]
    assert commands[0]["state"] == "STATE_TERMINATED"
    assert commands[0]["exitStatus"].startswith("rejected: requests 8 slots")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "config.entrypoint: Field required"),
        ({"entrypoint": "true", "resources": {"slots": "two"}}, "config.resources.slots"),
        ({"entrypoint": "true", "resources": {"priority": 0}}, "config.resources.priority"),
        ({"entrypoint": "true", "resourcez": {}}, "config.resourcez: Extra inputs"),
        ({"entrypoint": "true", "resources": {"resource_pool": "gpu"}}, "unknown pool 'gpu'"),
    ],
)
def test_bad_command_config_is_a_400_naming_the_field(
    cluster: tuple[Master, list[Agent]], config: dict[str, object], expected: str
) -> None:
    master, _ = cluster
    api = Api(master)
    response = api.post("/api/v1/commands", json={"config": config})
    assert response.status_code == 400
    assert expected in response.json()["message"]


def test_queued_work_waits_for_slots_and_runs_in_order(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    first = api.run("sleep 1; echo first", slots=2)
    second = api.run("echo second", slots=2)
    wait_for(
        "the second command to queue with a reason",
        lambda: any("waiting for 2 free slots" in line["message"] for line in api.logs(second)),
    )
    api.wait_ended(second)
    assert api.task(first)["endTime"] <= api.task(second)["allocations"][0]["startTime"]


def test_agent_drain_keeps_running_work_and_takes_no_new_work(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    running = api.run("sleep 2; echo done")
    wait_for("the command to run", lambda: api.task(running)["allocations"][0]["isReady"])
    disabled = api.post("/api/v1/agents/agent-0/disable", json={"drain": True})
    assert disabled.status_code == 200
    assert disabled.json()["agent"]["draining"] is True
    waiting = api.run("echo later")
    assert api.wait_ended(running)["allocations"][0]["exitCode"] == 0
    time.sleep(0.5)
    assert api.task(waiting)["allocations"][0]["state"] == "STATE_QUEUED"
    assert "disabled or draining" in api.task(waiting)["allocations"][0]["waitingReason"]
    assert api.post("/api/v1/agents/agent-0/enable").status_code == 200
    assert api.wait_ended(waiting)["allocations"][0]["exitCode"] == 0


def test_disable_without_drain_kills_running_work(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = api.run("sleep 300")
    wait_for("the command to run", lambda: api.task(task_id)["allocations"][0]["isReady"])
    assert api.post("/api/v1/agents/agent-0/disable", json={}).status_code == 200
    reason = api.wait_ended(task_id)["allocations"][0]["exitReason"]
    assert "agent 'agent-0' was disabled" in reason


def test_only_admins_enable_and_disable_agents(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    assert Api(master, "determined").post("/api/v1/agents/agent-0/disable").status_code == 403
    assert Api(master).post("/api/v1/agents/nope/disable").status_code == 404


def test_agent_killed_mid_command_fails_it_with_a_reason(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, agents = cluster
    api = Api(master)
    task_id = api.run("sleep 300")
    wait_for("the command to run", lambda: api.task(task_id)["allocations"][0]["isReady"])
    agents[0].kill()
    wait_for("the agent to leave", lambda: api.agents() == {})
    reason = api.wait_ended(task_id, timeout=30)["allocations"][0]["exitReason"]
    assert "agent 'agent-0' lost its connection to the master" in reason
    pools = api.get("/api/v1/resource-pools").json()["resourcePools"]
    assert pools[0]["slotsAvailable"] == 0 and pools[0]["numAgents"] == 0


def test_master_restart_reattaches_a_running_command(
    cluster: tuple[Master, list[Agent]],
) -> None:
    master, _ = cluster
    api = Api(master)
    task_id = api.run("echo before; sleep 4; echo after")
    wait_for("the command to run", lambda: api.task(task_id)["allocations"][0]["isReady"])
    master.stop()
    master.start()
    api = Api(master)
    allocation = api.wait_ended(task_id, timeout=40)["allocations"][0]
    assert allocation["exitCode"] == 0, allocation
    assert api.task_output(task_id) == ["before", "after"]
    assert any("re-attached to agent 'agent-0'" in e["message"] for e in api.logs(task_id))


def test_unknown_task_and_missing_auth(cluster: tuple[Master, list[Agent]]) -> None:
    master, _ = cluster
    api = Api(master)
    assert api.get("/api/v1/tasks/nope").status_code == 404
    assert api.get("/api/v1/tasks/nope/logs").status_code == 404
    anonymous = Api(master, username="")
    assert anonymous.get("/api/v1/commands").status_code == 401
    assert (
        anonymous.post("/api/v1/commands", json={"config": {"entrypoint": "true"}}).status_code
        == 401
    )
