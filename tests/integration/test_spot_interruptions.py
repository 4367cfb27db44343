"""Spot interruptions end to end: real master, real agents each watching its own fake metadata
service, the local provider launching replacements, the digits trial training for real.

No emulator of AWS IMDSv2 or of the GCP metadata server exists; ``tests/fake_metadata.py`` is a
loopback fake faithful to their public references. The spot agents are started by the test
(each pointed at its own fake with ``DET_AGENT_METADATA_URL``); the pool's local provider
launches the replacements (its agents watch nothing: ``DET_AGENT_METADATA_SERVICE=off``).

One training covers both clouds: the trial starts on ``a-spot-aws``, is interrupted there by
an AWS instance-action, resumes on ``b-spot-gcp``, is preempted there by GCP and resumes on the
replacement the provisioner launched; it must end exactly as an uninterrupted run of the same
config does. Which free agent gets the trial is the scheduler's documented tie-break (fewest
free slots, then agent id: ``a-…`` < ``b-…`` < the provider's ``default-…``). Before the
second notice a command occupies the first replacement, so that notice needs a launch too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TRAVERSABLE
from tests.fake_metadata import FakeMetadata
from tests.integration.cluster import (
    Agent,
    Api,
    Master,
    kill_provisioned_agents,
    running_cluster,
    wait_for,
)
from tests.integration.test_experiments_e2e import (
    create,
    example_config,
    final_accuracy,
    trials,
    wait_ended,
)

# Long enough that both notices land mid-training; a fixed seed makes runs comparable.
CONFIG = example_config(
    "const.yaml",
    searcher__max_length={"batches": 400},
    min_validation_period={"batches": 100},
    scheduling_unit=5,
    reproducibility={"experiment_seed": 7},
    hyperparameters__global_batch_size=16,
)
LAUNCH_WITHIN = timedelta(seconds=1)
SPOT_AGENT = {"aws": "a-spot-aws", "gcp": "b-spot-gcp"}


def spot_pool() -> list[dict[str, Any]]:
    return [
        {
            "pool_name": "default",
            "provider": {
                "type": "local",
                "instance_slots": 1,
                "min_instances": 0,
                "max_instances": 2,
                "max_idle_agent_period": "10m",
                "boot_hedge": 0,  # each launch is the notice's replacement, not a boot racer
                "provisioning_tick": "10s",  # only the notice should wake the loop in time
            },
        }
    ]


def outcome(api: Api, experiment_id: int) -> dict[str, Any]:
    ended = wait_ended(api, experiment_id, timeout=600)
    assert ended["state"] == "STATE_COMPLETED", ended.get("stateReason")
    (trial,) = trials(api, experiment_id)
    validations = api.get(
        f"/api/v1/trials/{trial['id']}/metrics", params={"group": "validation"}
    ).json()["metrics"]
    return {
        "trial": trial,
        "batches": trial["totalBatchesProcessed"],
        "validations": {
            m["stepsCompleted"]: m["metrics"]["avgMetrics"]["validation_loss"] for m in validations
        },
        "accuracy": final_accuracy(trial),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same trial, uninterrupted, on one agent (SQLite: the database plays no part in it)."""
    tmp = tmp_path_factory.mktemp("reference")
    if os.geteuid() == 0:  # task uids pass through it, as tests/conftest.py's tmp_path
        base = tmp_path_factory.getbasetemp()
        for directory in (base, *(p for p in tmp.parents if base in p.parents), tmp):
            directory.chmod(TRAVERSABLE)
    for master, _ in running_cluster(tmp, f"sqlite:///{tmp / 'ref.db'}", agents=1):
        api = Api(master)
        return outcome(api, create(api, CONFIG))
    raise AssertionError("the reference cluster did not start")


@pytest.fixture
def spot_cluster(tmp_path: Path, db_url: str) -> Iterator[tuple[Master, dict[str, Any]]]:
    fakes = {"aws": FakeMetadata("aws"), "gcp": FakeMetadata("gcp")}
    env = {"DET_AGENT_METADATA_SERVICE": "off"}  # the provider's agents are not spot here
    cluster = running_cluster(tmp_path, db_url, agents=0, resource_pools=spot_pool(), env=env)
    agents: list[Agent] = []
    try:
        master, _ = next(cluster)
        for cloud, fake in fakes.items():
            agent = Agent(tmp_path, master, SPOT_AGENT[cloud])
            assert agent.env is not None
            agent.env.update(DET_AGENT_METADATA_URL=fake.url, DET_AGENT_METADATA_SERVICE=cloud)
            agents.append(agent)
            agent.start()
        api = Api(master)
        wait_for("the spot agents to join", lambda: len(api.agents()) == 2, timeout=60)
        yield master, {"fakes": fakes, "agents": {a.id: a for a in agents}}
    finally:
        for agent in agents:
            agent.stop()
        cluster.close()
        for fake in fakes.values():
            fake.close()
        kill_provisioned_agents(tmp_path)


def _events(api: Api) -> list[dict[str, Any]]:
    found = api.get("/api/v1/resource-pools/default/events", params={"limit": 1000}).json()
    return list(reversed(found["events"]))  # oldest first


def _time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00"))


def _running_on(api: Api, experiment_id: int) -> str | None:
    """The agent the trial's current run is on, once it reports training progress there."""
    tasks = api.get("/api/v1/tasks").json()["allocationIdToSummary"]
    for summary in tasks.values():
        if summary.get("type") == "TRIAL" and summary.get("state") == "STATE_RUNNING":
            resources = summary.get("resources") or []
            for resource in resources:
                agent_devices = resource.get("agentDevices") or {}
                for agent_id in agent_devices:
                    return str(agent_id)
    return None


def _trained(api: Api, experiment_id: int) -> int:
    found = trials(api, experiment_id)
    return int(found[0]["totalBatchesProcessed"]) if found else 0


def _interrupt(fake: FakeMetadata, cloud: str) -> None:
    if cloud == "aws":
        at = datetime.now(UTC) + timedelta(minutes=2)
        fake.interrupt("terminate", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    else:
        fake.preempt()


@pytest.mark.timeout(900)  # two trainings of a few minutes on a loaded machine (with the reference)
def test_a_trial_checkpoints_on_each_notice_and_resumes_elsewhere_exactly(
    spot_cluster: tuple[Master, dict[str, Any]], reference: dict[str, Any]
) -> None:
    master, parts = spot_cluster
    fakes: dict[str, FakeMetadata] = parts["fakes"]
    api = Api(master)
    experiment_id = create(api, CONFIG)
    logs = [master.log_path, *(a.log_path for a in parts["agents"].values())]

    on = wait_for("the trial to run", lambda: _running_on(api, experiment_id), 120, logs)
    assert on == SPOT_AGENT["aws"]
    wait_for("the trial to train", lambda: _trained(api, experiment_id) > 0, 120, logs)
    _interrupt(fakes["aws"], "aws")
    wait_for(
        "the trial to resume on the GCP spot agent",
        lambda: _running_on(api, experiment_id) == SPOT_AGENT["gcp"],
        120,
        logs,
    )
    before = _trained(api, experiment_id)
    wait_for("it to train there", lambda: _trained(api, experiment_id) > before, 120, logs)
    # The first replacement is busy with other work when the second notice comes.
    busy = api.run("sleep 600", slots=1)
    wait_for(
        "the command to run on the first replacement",
        lambda: api.task(busy)["allocations"][-1]["state"] == "STATE_RUNNING",
        60,
        logs,
    )
    _interrupt(fakes["gcp"], "gcp")

    result = outcome(api, experiment_id)
    api.post(f"/api/v1/commands/{busy}/kill")
    trial = result["trial"]
    assert trial["restarts"] == 0 and trial["runId"] >= 3
    assert result["batches"] == reference["batches"]
    assert result["validations"] == reference["validations"]
    assert result["accuracy"] == reference["accuracy"]

    events = _events(api)
    notices = [e for e in events if e["kind"] == "interruption_notice"]
    assert [e["instanceId"] for e in notices] == [SPOT_AGENT["aws"], SPOT_AGENT["gcp"]]
    aws_notice, gcp_notice = notices
    assert f"spot interruption notice for {SPOT_AGENT['aws']}, deadline " in aws_notice["reason"]
    # GCP: 30 s from when the agent saw it, a moment before the master recorded it.
    said = datetime.strptime(gcp_notice["reason"].split("deadline ")[1][:8], "%H:%M:%S")
    recorded = _time(gcp_notice).replace(microsecond=0)
    deadline = recorded.replace(hour=said.hour, minute=said.minute, second=said.second)
    assert timedelta(seconds=28) <= deadline - recorded <= timedelta(seconds=30)
    for notice in notices:
        launch = next(e for e in events if e["kind"] == "requested" and _time(e) >= _time(notice))
        assert _time(launch) - _time(notice) <= LAUNCH_WITHIN, (notice, launch)
        assert f"on reclaimed {notice['instanceId']}" in launch["reason"]
    checkpointed = [e for e in events if e["kind"] == "checkpointed"]
    assert len(checkpointed) == 2
    assert all(f"trial {trial['id']} checkpointed and exited" in e["reason"] for e in checkpointed)
    resumed = [e["reason"] for e in events if e["kind"] == "resumed"]
    assert len(resumed) == 2
    assert resumed[0].startswith(f"trial {trial['id']} resumed on {SPOT_AGENT['gcp']}")
    assert resumed[1].startswith(f"trial {trial['id']} resumed on default-")
    logs_text = api.get(f"/api/v1/trials/{trial['id']}/logs").text
    assert "preempted: spot interruption notice" in logs_text


def test_a_rebalance_recommendation_launches_a_replacement_and_preempts_nothing(
    spot_cluster: tuple[Master, dict[str, Any]],
) -> None:
    master, parts = spot_cluster
    api = Api(master)
    fakes: dict[str, FakeMetadata] = parts["fakes"]
    # Both spot agents busy, so the command surely runs on the one that gets the recommendation.
    commands = [api.run("sleep 60", slots=1) for _ in range(2)]
    wait_for(
        "both commands to run",
        lambda: all(api.task(c)["allocations"][-1]["state"] == "STATE_RUNNING" for c in commands),
        60,
    )
    fakes["aws"].recommend_rebalance(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rebalance = wait_for(
        "the rebalance event",
        lambda: next((e for e in _events(api) if e["kind"] == "rebalance"), None),
        30,
        [master.log_path],
    )
    assert rebalance["instanceId"] == SPOT_AGENT["aws"]
    launch = wait_for(
        "the replacement launch",
        lambda: next((e for e in _events(api) if e["kind"] == "requested"), None),
        10,
    )
    assert _time(launch) - _time(rebalance) <= LAUNCH_WITHIN
    assert f"on reclaimed {SPOT_AGENT['aws']}" in launch["reason"]
    for command in commands:
        allocation = api.task(command)["allocations"][-1]
        assert allocation["state"] == "STATE_RUNNING"  # nothing was preempted or stopped
    lines = [e["message"] for c in commands for e in api.logs(c) if e["source"] == "master"]
    assert any(f"rebalance recommendation for {SPOT_AGENT['aws']}" in line for line in lines)
    assert not any(line.startswith("preempted") for line in lines)
    for command in commands:
        with contextlib.suppress(Exception):
            api.post(f"/api/v1/commands/{command}/kill")
