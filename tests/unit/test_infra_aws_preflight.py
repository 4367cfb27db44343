"""``det deploy aws up``'s preflight against moto (credentials, region, image, instance types) and
the vCPU quota check. moto has no Service Quotas, so the quota answers come from botocore's
Stubber with the response shapes of the Service Quotas API reference; EC2 stays moto's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from infra.aws.preflight import (
    PreflightError,
    check_identity,
    check_image,
    check_quota,
    check_region,
    family_group,
    preflight,
    vcpu_needs,
)
from infra.aws.settings import AwsDeploySettings
from tests.infra_plans import BASE

AMI = "ami-12c6146b"  # one of moto's built-in images


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def settings(**fields: Any) -> AwsDeploySettings:
    return AwsDeploySettings(**{**BASE, **fields})


def quota(code: str, value: float) -> dict[str, Any]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": value}}


def stubbed_quotas(session: Any, answers: dict[str, float | None]) -> Any:
    """A Service Quotas client answering ``answers`` in order (None: NoSuchResourceException
    from GetServiceQuota, then the default from GetAWSDefaultServiceQuota)."""
    client = session.client("service-quotas", region_name="us-east-1")
    stubber = Stubber(client)
    for code, value in answers.items():
        params = {"ServiceCode": "ec2", "QuotaCode": code}
        if value is None:
            stubber.add_client_error("get_service_quota", "NoSuchResourceException",
                                     expected_params=params)  # fmt: skip
            stubber.add_response("get_aws_default_service_quota", quota(code, 8), params)
        else:
            stubber.add_response("get_service_quota", quota(code, value), params)
    stubber.activate()
    return client


@pytest.mark.parametrize(
    ("instance_type", "group"),
    [("t3.medium", "standard"), ("m6i.large", "standard"), ("g4dn.xlarge", "g"),
     ("vt1.3xlarge", "g"), ("p4d.24xlarge", "p"), ("inf2.xlarge", None)],
)  # fmt: skip
def test_family_group(instance_type: str, group: str | None) -> None:
    assert family_group(instance_type) == group


def test_needs_count_the_master_and_every_agent_in_their_market() -> None:
    vcpus = {"t3.medium": 2, "g4dn.xlarge": 4, "m5.large": 2}
    assert vcpu_needs(settings(), vcpus) == {("standard", "on-demand"): 2, ("g", "on-demand"): 20}
    spot = settings(spot=True, max_dynamic_agents=3)
    assert vcpu_needs(spot, vcpus) == {("standard", "on-demand"): 2, ("g", "spot"): 12}
    same = settings(agent_instance_type="m5.large", max_dynamic_agents=4)
    assert vcpu_needs(same, vcpus) == {("standard", "on-demand"): 10}


def test_a_quota_too_small_says_which_and_what_to_do(session: Any) -> None:
    ec2 = session.client("ec2")
    quotas = stubbed_quotas(session, {"L-1216C47A": 32, "L-DB2E81BA": 8})
    with pytest.raises(PreflightError) as caught:
        check_quota(ec2, quotas, settings())
    [problem] = caught.value.problems
    assert "vCPU quota L-DB2E81BA (g family, on-demand) is 8 in us-east-1" in problem
    assert "need 20" in problem and "--max-dynamic-agents" in problem


def test_a_quota_never_changed_falls_back_to_the_default(session: Any) -> None:
    ec2 = session.client("ec2")
    quotas = stubbed_quotas(session, {"L-1216C47A": None, "L-3819A6DF": 64})
    assert check_quota(ec2, quotas, settings(spot=True)) == []


def test_an_unreadable_quota_is_a_note_not_a_failure(session: Any) -> None:
    ec2 = session.client("ec2")
    client = session.client("service-quotas", region_name="us-east-1")
    stubber = Stubber(client)
    for _ in range(2):
        stubber.add_client_error("get_service_quota", "AccessDeniedException")
    stubber.activate()
    notes = check_quota(ec2, client, settings())
    assert len(notes) == 2 and all("not checked" in note for note in notes)


def test_an_unknown_instance_type_is_named(session: Any) -> None:
    with pytest.raises(PreflightError, match=r"g9\.huge"):
        check_quota(session.client("ec2"), None, settings(agent_instance_type="g9.huge"))


def test_image_given_must_exist_and_otherwise_is_found_by_tags(session: Any) -> None:
    ec2 = session.client("ec2")
    assert check_image(ec2, settings(image_id=AMI)) == AMI
    with pytest.raises(PreflightError, match="no such image"):
        check_image(ec2, settings(image_id="ami-0000000000000dead"))
    with pytest.raises(PreflightError, match="build one with Packer"):
        check_image(ec2, settings())
    instance = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]
    baked = ec2.create_image(InstanceId=instance["InstanceId"], Name="flotilla-agent-x")["ImageId"]
    ec2.create_tags(
        Resources=[baked],
        Tags=[
            {"Key": "flotilla:image", "Value": "agent"},
            {"Key": "flotilla:master", "Value": "yes"},
        ],
    )
    assert check_image(ec2, settings()) == baked


def test_region_and_identity(session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_identity(session) == "123456789012"
    check_region(session.client("ec2"), "us-east-1")
    with pytest.raises(PreflightError, match="not a region of this account"):
        check_region(session.client("ec2"), "mars-north-1")


def test_no_credentials_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(PreflightError, match="aws configure"):
        check_identity(boto3.session.Session(region_name="us-east-1"))


def test_preflight_runs_every_check_in_order(session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    quotas = stubbed_quotas(session, {"L-1216C47A": 64, "L-DB2E81BA": 64})
    original = session.client

    def client(name: str, **kw: Any) -> Any:
        return quotas if name == "service-quotas" else original(name, **kw)

    monkeypatch.setattr(session, "client", client)
    result = preflight(session, settings(image_id=AMI))
    assert (result.account, result.image_id, result.notes) == ("123456789012", AMI, [])
