"""The GCP provider end to end: the master as its own process, Compute Engine played by the
loopback fake of its REST API (``tests/fake_gcp_compute.py``: GCP has no emulator for Compute,
so a fake faithful to the REST reference stands in; the master reaches it through
``endpoint_url`` with anonymous credentials).

The fake runs no machines, so a harness here plays GCE's part: for every VM the fake reports
RUNNING with the pool's labels it boots a real local agent from the VM's own ``startup-script``
metadata (as GCE's guest agent would), and kills it when the VM stops or is deleted. Queued work
must make the pool launch VMs (in the next zone when one is stocked out), run on their agents,
and delete them when idle; a Spot VM preempted mid-trial must have its trial re-queued from its
checkpoint without spending a restart. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.user_data import agent_config_from_user_data
from tests.fake_gcp_compute import STOCKOUT, FakeComputeState, fake_compute
from tests.integration.cluster import BIN, Api, Master, Process, wait_for

PROJECT = "flotilla-test"
ZONES = ["us-central1-a", "us-central1-b"]
POOL = "default"
FAKE_TRIAL = Path(__file__).parent / "data" / "fake_trial.py"


class FakeGCEMachines:
    """Boots a local ``det-agent`` for each RUNNING VM of the pool in the fake, from its
    ``startup-script``; kills it (like a VM going away) once the VM is not RUNNING."""

    def __init__(self, state: FakeComputeState, workdir: Path) -> None:
        self.state = state
        self.workdir = workdir
        self.agents: dict[str, Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for agent in self.agents.values():
            agent.stop(signal.SIGKILL)

    def vms(self) -> dict[str, dict[str, Any]]:
        return {vm["name"]: vm for vm in self.state.live("flotilla-pool-name", POOL)}

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            vms = self.vms()
            for name, vm in vms.items():
                if vm["status"] == "RUNNING" and name not in self.agents:
                    self._boot(vm)
            for name in [n for n in self.agents if vms.get(n, {}).get("status") != "RUNNING"]:
                self.agents.pop(name).stop(signal.SIGKILL)

    def _boot(self, vm: dict[str, Any]) -> None:
        items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
        config: dict[str, Any] = agent_config_from_user_data(items["startup-script"], vm["name"])
        config.pop("connection_lost_hook")  # never "shutdown -h now" the test machine
        config["no_gpu"] = True
        config["work_dir"] = str(self.workdir / vm["name"])
        path = self.workdir / f"{vm['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        agent = Process(
            [str(BIN / "det-agent"), "--config", str(path)], self.workdir / f"{vm['name']}.log"
        )
        agent.start()
        self.agents[vm["name"]] = agent


@pytest.fixture
def compute() -> Iterator[tuple[str, FakeComputeState]]:
    with fake_compute(FakeComputeState(project=PROJECT, zones=set(ZONES))) as running:
        yield running


def gcp_pool(endpoint: str, **fields: Any) -> dict[str, Any]:
    return {
        "pool_name": POOL,
        "provider": {
            "type": "gcp",
            "project": PROJECT,
            "zones": ZONES,
            "instance_type": {"machine_type": "n1-standard-4"},
            "boot_disk_source_image": f"projects/{PROJECT}/global/images/flotilla-agent",
            "endpoint_url": endpoint,
            "provisioning_tick": "1s",
            "max_instances": 1,
            **fields,
        },
    }


def events(api: Api) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get(f"/api/v1/resource-pools/{POOL}/events").json()["events"]
    return found


def test_queued_work_launches_a_spot_vm_in_the_next_zone_and_idle_deletes_it(
    tmp_path: Path, db_url: str, compute: tuple[str, FakeComputeState]
) -> None:
    endpoint, state = compute
    state.inject("us-central1-a", "spot", STOCKOUT)
    pool = gcp_pool(endpoint, preemptible=True, max_idle_agent_period="3s")
    master = Master(tmp_path, db_url, resource_pools=[pool])
    master.start()
    machines = FakeGCEMachines(state, tmp_path)
    machines.start()
    try:
        api = Api(master)
        task_id = api.run("echo ran on $DET_AGENT_ID")
        task = api.wait_ended(task_id, timeout=60)
        assert task["allocations"][0]["exitCode"] == 0, task
        (name,) = task["allocations"][0]["agents"]
        assert name.startswith("flotilla-agent-")
        assert api.task_output(task_id) == [f"ran on {name}"]
        vm = machines.vms()[name]
        assert vm["zone"].endswith("/zones/us-central1-b")
        assert vm["scheduling"]["provisioningModel"] == "SPOT"
        refused = [e for e in events(api) if e["kind"] == "launch_failed:capacity"]
        assert refused and "ZONE_RESOURCE_POOL_EXHAUSTED" in refused[0]["reason"]
        assert "us-central1-a" in refused[0]["reason"]
        wait_for(
            "the idle VM to be deleted",
            lambda: name not in machines.vms(),
            timeout=60,
            logs=[master.log_path],
        )
        cost = api.get("/api/v1/cost", params={"groupBy": "instance"}).json()
        assert [g["key"] for g in cost["groups"]] == [name, "idle"]
        assert cost["totalUsd"] > 0
    finally:
        machines.stop()
        master.stop()


def test_a_preempted_spot_vm_requeues_its_trial_from_the_checkpoint_without_a_restart(
    tmp_path: Path, db_url: str, compute: tuple[str, FakeComputeState]
) -> None:
    endpoint, state = compute
    pool = gcp_pool(endpoint, spot=True, zones=["us-central1-a"], max_idle_agent_period="30s")
    master = Master(tmp_path, db_url, resource_pools=[pool])
    master.start()
    machines = FakeGCEMachines(state, tmp_path)
    machines.start()
    try:
        api = Api(master)
        content = base64.b64encode(FAKE_TRIAL.read_bytes()).decode()
        experiment = {
            "name": "preempted",
            "entrypoint": "python fake_trial.py",
            "searcher": {
                "name": "single",
                "metric": "validation_loss",
                "max_length": {"batches": 10},
            },
            "hyperparameters": {"x": 1},
            "max_restarts": 0,  # a failure would end the trial in error
            "environment": {
                "environment_variables": {"FAKE_STEP_SECONDS": "0.3", "FAKE_CHECKPOINT_EVERY": "2"}
            },
        }
        response = api.post(
            "/api/v1/experiments",
            json={
                "config": yaml.safe_dump(experiment),
                "modelDefinition": [
                    {"path": "fake_trial.py", "type": 48, "content": content, "mtime": 0}
                ],
            },
        )
        assert response.status_code == 200, response.text
        experiment_id = response.json()["experiment"]["id"]

        def trial() -> dict[str, Any]:
            found: dict[str, Any] = api.get(f"/api/v1/experiments/{experiment_id}/trials").json()[
                "trials"
            ][0]
            return found

        first = wait_for(
            "the trial to checkpoint mid-way",
            lambda: (t := trial())["latestCheckpoint"] and t["totalBatchesProcessed"] >= 3 and t,
            timeout=90,
            logs=[master.log_path],
        )
        saved = first["latestCheckpoint"]
        (name,) = machines.vms()
        state.preempt("us-central1-a", name)

        def ended() -> dict[str, Any] | None:
            body = api.get(f"/api/v1/experiments/{experiment_id}").json()["experiment"]
            return body if body["state"] in ("STATE_COMPLETED", "STATE_ERROR") else None

        done = wait_for("the experiment to end", ended, timeout=120, logs=[master.log_path])
        assert done["state"] == "STATE_COMPLETED", done
        final = trial()
        assert final["restarts"] == 0
        assert len(final["taskIds"]) == 2 and final["totalBatchesProcessed"] == 10
        with api.http.stream("GET", f"/api/v1/trials/{final['id']}/logs") as logs:
            lines = [json.loads(line)["result"]["message"] for line in logs.iter_lines() if line]
        assert any("its instance was preempted by GCP" in line for line in lines), lines
        runs = [line for line in lines if line.startswith("run 2 latest=")]
        assert runs, lines
        resumed_from = runs[0].split("run 2 latest=")[1].split()[0]
        assert resumed_from != "-"
        assert resumed_from in {saved} | {
            c["uuid"]
            for c in api.get(f"/api/v1/experiments/{experiment_id}/checkpoints").json()[
                "checkpoints"
            ]
        }
        kinds = {(e["instanceId"], e["kind"], e["reason"]) for e in events(api)}
        assert (name, "interrupted", "preempted by GCP") in kinds
        assert (name, "terminated", "preempted by GCP") in kinds
        assert name not in machines.vms()
    finally:
        machines.stop()
        master.stop()
