"""The AWS provider end to end against moto in server mode, the master as its own process.

moto runs no machines, so a harness here plays EC2's part: for every instance moto reports
running with the pool's tags it boots a real local agent from the instance's own user-data
(as cloud-init would), and stops it when moto says the instance is terminated. Queued work
must make the pool launch instances, run on their agents, and idle instances must end up
terminated in moto.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from provisioner.user_data import agent_config_from_user_data
from tests.integration.cluster import (
    BIN,
    Api,
    Master,
    Process,
    free_port,
    wait_for,
)

REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


class FakeEC2Machines:
    """Boots a local ``det-agent`` for each running moto instance of the pool."""

    def __init__(self, endpoint: str, workdir: Path) -> None:
        self.ec2 = boto3.client(
            "ec2",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
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
            agent.stop()

    def states(self) -> dict[str, str]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:flotilla:pool", "Values": ["default"]}]
        )
        return {
            i["InstanceId"]: i["State"]["Name"]
            for page in pages
            for r in page["Reservations"]
            for i in r["Instances"]
        }

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            for instance_id, state in self.states().items():
                if state == "running" and instance_id not in self.agents:
                    self._boot(instance_id)
                elif state != "running" and instance_id in self.agents:
                    self.agents.pop(instance_id).stop()

    def _boot(self, instance_id: str) -> None:
        raw = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        user_data = base64.b64decode(raw["UserData"]["Value"]).decode()
        config: dict[str, Any] = agent_config_from_user_data(user_data, instance_id)
        config.pop("connection_lost_hook")  # never "shutdown -h now" the test machine
        config["no_gpu"] = True
        config["work_dir"] = str(self.workdir / instance_id)
        path = self.workdir / f"{instance_id}.yaml"
        path.write_text(yaml.safe_dump(config))
        agent = Process(
            [str(BIN / "det-agent"), "--config", str(path)], self.workdir / f"{instance_id}.log"
        )
        agent.start()
        self.agents[instance_id] = agent


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_queued_work_launches_ec2_instances_that_are_terminated_when_idle(
    tmp_path: Path, db_url: str, moto_endpoint: str
) -> None:
    machines = FakeEC2Machines(moto_endpoint, tmp_path)
    image_id = machines.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    pool = {
        "pool_name": "default",
        "provider": {
            "type": "aws",
            "instance_type": "t3.medium",
            "image_id": image_id,
            "region": REGION,
            "endpoint_url": moto_endpoint,
            "max_instances": 2,
            "max_idle_agent_period": "3s",
            "provisioning_tick": "1s",
        },
    }
    master = Master(tmp_path, db_url, env=CREDENTIALS, resource_pools=[pool])
    master.start()
    machines.start()
    try:
        api = Api(master)
        task_id = api.run("echo ran on $DET_AGENT_ID")
        task = api.wait_ended(task_id, timeout=60)
        assert task["allocations"][0]["exitCode"] == 0, task
        (instance_id,) = task["allocations"][0]["agents"]
        assert instance_id.startswith("i-")
        assert api.task_output(task_id) == [f"ran on {instance_id}"]
        assert machines.states()[instance_id] in ("running", "pending")
        wait_for(
            "the idle instance to be terminated in moto",
            lambda: machines.states()[instance_id] == "terminated",
            timeout=60,
            logs=[master.log_path],
        )
        instance = machines.ec2.describe_instances(InstanceIds=[instance_id])
        tags = {t["Key"]: t["Value"] for t in instance["Reservations"][0]["Instances"][0]["Tags"]}
        assert tags["flotilla:market"] == "on-demand"
        cost = api.get("/api/v1/cost", params={"groupBy": "instance"}).json()
        # The command's share of the instance, then what nothing used.
        assert [g["key"] for g in cost["groups"]] == [instance_id, "idle"]
        assert cost["totalUsd"] > 0
    finally:
        machines.stop()
        master.stop()


def test_an_unreachable_cloud_degrades_its_pool_without_stopping_the_master(
    tmp_path: Path, db_url: str
) -> None:
    pool = {
        "pool_name": "gpu",
        "provider": {
            "type": "aws",
            "instance_type": "g5.xlarge",
            "image_id": "ami-12345678",
            "region": REGION,
            "endpoint_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "spot": True,
            "provisioning_tick": "1s",
        },
    }
    master = Master(
        tmp_path, db_url, env=CREDENTIALS, resource_pools=[pool], default_resource_pool="gpu"
    )
    master.start()
    try:
        api = Api(master)

        def status() -> str:
            pools = api.get("/api/v1/resource-pools").json()["resourcePools"]
            return str(pools[0]["provisioning"]["status"])

        wait_for("the pool to report the failure", lambda: "failed" in status(), timeout=60)
        assert api.get("/api/v1/me").status_code == 200
    finally:
        master.stop()
