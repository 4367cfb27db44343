"""The policy pack as the Pulumi engine runs it: ``python -m infra.policy`` in its own process
serves pulumi_policy's analyzer over gRPC on a loopback port it prints; this test plays the
engine with Pulumi's own analyzer stubs (the Pulumi CLI is not installable here) and sends it
the resources the program registers under mocks, as the engine sends them during a preview."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from infra.common.plan import PlannedResource
from tests.infra_plans import planned

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
# pulumi.runtime.proto's EnforcementLevel: ADVISORY = 0, MANDATORY = 1.
MANDATORY = 1


@pytest.fixture(scope="module")
def analyzer() -> Iterator[Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.policy"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()  # what the engine reads first
        assert port.isdigit(), process.stderr.read() if process.stderr else port
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT_S)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def struct(properties: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    json_format.ParseDict(dict(properties), message)
    return message


def urn(resource: PlannedResource) -> str:
    return f"urn:pulumi:demo::flotilla-aws::{resource.type}::{resource.name}"


def analyze(analyzer: Any, resource: PlannedResource) -> list[Any]:
    request = analyzer_pb2.AnalyzeRequest(
        type=resource.type,
        properties=struct(resource.inputs),
        urn=urn(resource),
        name=resource.name,
    )
    return list(analyzer.Analyze(request).diagnostics)


def analyze_stack(analyzer: Any, resources: list[PlannedResource]) -> list[Any]:
    request = analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(
                type=r.type, properties=struct(r.inputs), urn=urn(r), name=r.name
            )
            for r in resources
        ]
    )
    return list(analyzer.AnalyzeStack(request).diagnostics)


def test_the_pack_is_mandatory_and_holds_the_aws_policies(analyzer: Any) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "flotilla"
    levels = {p.name: p.enforcementLevel for p in info.policies}
    assert {
        "iam-no-star-on-star",
        "ec2-imdsv2-required",
        "s3-private-encrypted",
        "no-ssh-from-world",
        "rds-private-encrypted",
    } <= set(levels)
    assert set(levels.values()) == {MANDATORY}


def test_the_programs_resources_pass_as_the_engine_sends_them(analyzer: Any) -> None:
    resources = planned("default").resources
    for resource in resources:
        assert analyze(analyzer, resource) == [], resource.name
    assert analyze_stack(analyzer, resources) == []


def test_violations_come_back_as_mandatory_diagnostics(analyzer: Any) -> None:
    ssh = PlannedResource(
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "ssh-world",
        {"securityGroupId": "sg-1", "ipProtocol": "tcp", "fromPort": 22, "toPort": 22,
         "cidrIpv4": "0.0.0.0/0"},
    )  # fmt: skip
    [diagnostic] = analyze(analyzer, ssh)
    assert diagnostic.policyName == "no-ssh-from-world"
    assert diagnostic.enforcementLevel == MANDATORY
    assert "port 22" in diagnostic.message
    without_block = [
        r
        for r in planned("default").resources
        if r.type != "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
    ]
    [diagnostic] = analyze_stack(analyzer, without_block)
    assert diagnostic.policyName == "s3-private-encrypted"
    assert diagnostic.urn.endswith("::checkpoints")


def test_the_gcp_programs_resources_pass_too(analyzer: Any) -> None:
    """One pack serves both clouds: the GCP program's resources, sent as the engine sends them."""
    from infra.gcp.dry_run import plan
    from infra.gcp.settings import GcpDeploySettings

    settings = GcpDeploySettings(
        cluster_id="demo", project="my-project-1", inbound_cidr="203.0.113.0/24"
    )
    resources = [r for r in plan(settings).resources if not r.type.startswith("pulumi:")]
    for resource in resources:
        assert analyze(analyzer, resource) == [], resource.name
    assert analyze_stack(analyzer, resources) == []
