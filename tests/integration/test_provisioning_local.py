"""The local provider end to end: queued work launches agent processes, idle ones go away,
every step is recorded with its reason, and the instances have a cost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster import (
    Api,
    Master,
    kill_provisioned_agents,
    running_cluster,
    wait_for,
)

PRICE = 3.6  # $/hour: a cent a second, so a short test still costs something


def elastic_pool(**provider: Any) -> list[dict[str, Any]]:
    return [
        {
            "pool_name": "default",
            "provider": {
                "type": "local",
                "instance_slots": 2,
                "min_instances": 0,
                "max_instances": 2,
                "max_idle_agent_period": "3s",
                "provisioning_tick": "1s",
                "prices": {"local": PRICE},
                **provider,
            },
        }
    ]


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    try:
        for master, _ in running_cluster(tmp_path, db_url, agents=0, resource_pools=elastic_pool()):
            yield master
    finally:
        kill_provisioned_agents(tmp_path)  # they run in their own sessions


def _instances(api: Api) -> list[dict[str, Any]]:
    pools = api.get("/api/v1/resource-pools").json()["resourcePools"]
    return list(pools[0]["provisioning"]["instances"])


def test_queued_work_grows_the_fleet_and_idle_agents_go_away(master: Master) -> None:
    api = Api(master)
    assert api.agents() == {}
    first = api.run("echo one; sleep 2", slots=2)
    second = api.run("echo two; sleep 2", slots=2)
    wait_for("two agents to join", lambda: len(api.agents()) == 2, timeout=30)
    for task_id in (first, second):
        assert api.wait_ended(task_id)["allocations"][0]["exitCode"] == 0
    waiting = [e["message"] for e in api.logs(first) if e["source"] == "master"]
    assert any("pool 'default'" in line for line in waiting) or any(
        line.startswith("assigned to agent 'default-") for line in waiting
    )
    wait_for("idle agents to be terminated", lambda: api.agents() == {}, timeout=30)
    wait_for("the provider to list no instance", lambda: _instances(api) == [], timeout=30)
    events = api.get("/api/v1/resource-pools").json()["resourcePools"][0]
    assert events["provisioning"]["provider"] == "local"
    events = api.get("/api/v1/resource-pools/default/events").json()["events"]
    kinds = [e["kind"] for e in reversed(events)]
    assert kinds.count("requested") == 2 and kinds.count("terminated") == 2
    assert kinds.index("joined") < kinds.index("draining") < kinds.index("terminated")
    drained = next(e for e in events if e["kind"] == "draining")
    assert "idle" in drained["reason"]
    cost = api.get("/api/v1/cost", params={"groupBy": "user"}).json()
    assert cost["totalUsd"] > 0
    assert cost["groups"][0]["key"] == "admin" and cost["groups"][0]["usd"] > 0
    by_instance = api.get("/api/v1/cost", params={"groupBy": "instance"}).json()["groups"]
    assert len([g for g in by_instance if not g["idle"]]) == 2


def test_work_larger_than_an_instance_is_rejected_with_the_reason(master: Master) -> None:
    api = Api(master)
    response = api.post(
        "/api/v1/commands", json={"config": {"entrypoint": "true", "resources": {"slots": 3}}}
    )
    assert response.status_code == 400
    assert "largest agent in resource pool 'default' has 2" in response.json()["message"]
    assert _instances(api) == []


def test_the_fleet_never_exceeds_max_instances(master: Master) -> None:
    api = Api(master)
    tasks = [api.run("sleep 3", slots=2) for _ in range(3)]
    wait_for("two agents", lambda: len(api.agents()) == 2, timeout=30)
    assert len(_instances(api)) == 2
    waiting = api.task(tasks[2])["allocations"][0]
    assert waiting["state"] == "STATE_QUEUED"
    for task_id in tasks:
        assert api.wait_ended(task_id, timeout=60)["allocations"][0]["exitCode"] == 0


def _pool_events(api: Api) -> list[dict[str, Any]]:
    return list(api.get("/api/v1/resource-pools/default/events").json()["events"])


def test_an_agent_that_stops_answering_is_terminated_as_disconnected(
    tmp_path: Path, db_url: str
) -> None:
    pool = elastic_pool(
        min_instances=1, max_disconnected_period="2s", max_agent_starting_period="10m"
    )
    cluster = running_cluster(tmp_path, db_url, agents=0, resource_pools=pool)
    master, _ = next(cluster)
    try:
        api = Api(master)
        wait_for("the minimum agent to join", lambda: len(api.agents()) == 1, timeout=30)
        (agent_id,) = api.agents()
        state = tmp_path / "master-data" / "provisioner" / "default" / "instances.json"
        (pid,) = [i["pid"] for i in json.loads(state.read_text()) if i["id"] == agent_id]
        os.kill(pid, signal.SIGSTOP)  # alive but silent: the master loses it
        try:
            wait_for(
                "the silent agent's instance to be terminated",
                lambda: any(
                    e["kind"] == "terminated" and e["instanceId"] == agent_id
                    for e in _pool_events(api)
                ),
                timeout=60,
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        reason = next(e["reason"] for e in _pool_events(api) if e["kind"] == "terminated")
        assert "disconnected" in reason and "never joined" not in reason
        wait_for("a replacement for min_instances", lambda: len(api.agents()) == 1, timeout=60)
    finally:
        cluster.close()
        kill_provisioned_agents(tmp_path)


def test_auto_idle_keeps_a_warm_agent_through_a_burst_and_lets_it_go_after(
    tmp_path: Path, db_url: str
) -> None:
    """``max_idle_agent_period: auto`` with no history yet keeps an idle agent for twice the
    pool's boot time (the startup script makes a boot take ~2 s): a burst of commands with ~1 s
    gaps runs on one agent, which goes away a few seconds after the burst."""
    pool = elastic_pool(
        instance_slots=1,
        max_instances=1,
        max_idle_agent_period="auto",
        boot_hedge=0,
        startup_script="sleep 2",
    )
    cluster = running_cluster(tmp_path, db_url, agents=0, resource_pools=pool)
    master, _ = next(cluster)
    try:
        api = Api(master)
        for n in range(3):
            task_id = api.run(f"echo burst {n}", slots=1)
            ended = api.wait_ended(task_id, timeout=60)
            assert ended["allocations"][0]["exitCode"] == 0
            time.sleep(1.0)  # the agent idles between submissions
        events = _pool_events(api)
        kinds = [e["kind"] for e in events]
        assert kinds.count("requested") == 1 and kinds.count("joined") == 1
        assert "draining" not in kinds and "terminated" not in kinds
        wait_for("the idle agent to go after the burst", lambda: api.agents() == {}, timeout=30)
        drained = next(e for e in _pool_events(api) if e["kind"] == "draining")
        assert "max_idle_agent_period auto" in drained["reason"]
        assert "2 × boot, no history yet" in drained["reason"]
    finally:
        cluster.close()
        kill_provisioned_agents(tmp_path)
