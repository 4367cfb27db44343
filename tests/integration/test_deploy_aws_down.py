"""``det deploy aws down`` against moto in server mode (boto3 reaches it through
``AWS_ENDPOINT_URL``): the agents the real AWS provider launched for the cluster, on-demand and
spot, are all terminated and the master is stopped; another cluster's instances are untouched;
without the Pulumi CLI the agent step still runs and reports, and the command says the stack
was not destroyed."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml

from cli.main import main
from infra.aws.agents import cluster_instances, terminate_cluster_agents
from infra.aws.master_config import master_yaml_from_user_data
from provisioner.aws import AWSProvider
from provisioner.config import AWSProviderConfig
from provisioner.prices import PriceBook
from provisioner.types import Market, Offer
from provisioner.user_data import render_user_data
from tests.infra_plans import planned
from tests.moto_logs import CREDENTIALS, REGION, moto_server

AMI = "ami-12c6146b"  # one of moto's built-in images


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def ec2(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("ec2", region_name=REGION)


def deployed_pool(ec2: Any) -> dict[str, Any]:
    """The ``aws`` pool's provider section as the stack's master.yaml has it, pointed at moto's
    network and image."""
    user_data = planned("default").named("master").inputs["userData"]
    config = yaml.safe_load(master_yaml_from_user_data(user_data, "http://10.40.0.5:8080"))
    provider = copy.deepcopy(config["resource_pools"][0]["provider"])
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.0.0/20")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"agents-{vpc}", Description="a", VpcId=vpc)
    provider["image_id"] = AMI
    provider["network_interface"] = {
        "subnet_id": subnet,
        "security_group_id": group["GroupId"],
        "public_ip": True,
    }
    provider.pop("iam_instance_profile_arn")  # moto would need the profile to exist
    return provider


def launch(provider: dict[str, Any], deployment: str, spot: int, on_demand: int) -> list[str]:
    """Instances launched by the real AWS provider for ``deployment``."""
    section = {**provider, "custom_tags": [{"key": "flotilla:deployment", "value": deployment}]}
    config = AWSProviderConfig.model_validate(section)
    user_data = render_user_data("http://10.40.0.5:8080", "aws", "join", "", {})
    aws = AWSProvider(config, "aws", f"master-{deployment}", user_data, PriceBook({}))
    ids = []
    for market, count in ((Market.SPOT, spot), (Market.ON_DEMAND, on_demand)):
        offer = Offer(config.instance_type, None, market, 0.5, 1)
        for n in range(count):  # one per call: moto launches MinCount instances
            ids += [i.id for i in aws.launch(offer, 1, f"{deployment}-{market.value}-{n}")]
    return ids


def start_master(ec2: Any, deployment: str) -> str:
    tags = [
        {"Key": "flotilla:deployment", "Value": deployment},
        {"Key": "flotilla:role", "Value": "master"},
    ]
    response = ec2.run_instances(
        ImageId=AMI,
        InstanceType="t3.medium",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return str(response["Instances"][0]["InstanceId"])


def states(ec2: Any, ids: list[str]) -> dict[str, str]:
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def test_down_terminates_every_agent_of_the_cluster_and_only_those(ec2: Any) -> None:
    provider = deployed_pool(ec2)
    master = start_master(ec2, "demo")
    ours = launch(provider, "demo", spot=2, on_demand=2)
    theirs = launch(provider, "other", spot=1, on_demand=1)
    other_master = start_master(ec2, "other")
    assert len(ours) == 4 and set(states(ec2, ours).values()) <= {"pending", "running"}

    lines: list[str] = []
    report = terminate_cluster_agents(ec2, "demo", poll_s=0.05, wait_s=30, on_progress=lines.append)

    assert sorted(report.terminated) == sorted(ours)
    assert len(report.spot) == 2 and set(report.spot) <= set(ours)
    assert report.stopped_masters == [master] and report.remaining == []
    assert set(states(ec2, ours).values()) == {"terminated"}
    assert states(ec2, [master])[master] in ("stopping", "stopped")
    assert set(states(ec2, [*theirs, other_master]).values()) <= {"pending", "running"}
    assert [i["InstanceId"] for i in cluster_instances(ec2, "demo", ["running"])] == []
    assert report.lines()[0] == f"stopped the master {master}"
    assert "terminated 4 agent instance(s) (2 spot)" in report.lines()


def test_down_command_reports_the_agents_even_when_pulumi_cannot(
    ec2: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = deployed_pool(ec2)
    ours = launch(provider, "cli", spot=1, on_demand=1)
    monkeypatch.setenv("PATH", "/nonexistent")  # no pulumi
    code = main(["deploy", "aws", "down", "--cluster-id", "cli", "--region", REGION, "--yes"])
    captured = capsys.readouterr()
    assert code == 1
    assert "Agents: terminated 2 agent instance(s) (1 spot)" in captured.out
    assert "Stack: not destroyed: the Pulumi CLI is not installed" in captured.out
    assert "cluster cli is not fully torn down" in captured.err
    assert set(states(ec2, ours).values()) == {"terminated"}
