"""The AWS deployment program under Pulumi's mocks: what it creates, what is wired to what, and
the master.yaml its user-data writes, validated by the master's own config model."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infra.aws import iam
from infra.aws.master_config import master_yaml_from_user_data
from infra.aws.program import TAG_MANAGED_BY
from infra.common.plan import Plan, PlannedResource
from master.config import MasterConfig
from tests.infra_plans import planned

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
# Resource types that take no tags in AWS.
UNTAGGED = {
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
}


def kinds(plan: Plan) -> list[str]:
    return [r.kind for r in plan.resources]


def master_config_of(plan: Plan) -> MasterConfig:
    user_data = plan.named("master").inputs["userData"]
    text = master_yaml_from_user_data(user_data, "http://10.40.0.5:8080")
    return MasterConfig.model_validate(yaml.safe_load(text))


def ingress(plan: Plan, group: str) -> list[dict[str, Any]]:
    return [dict(r.inputs) for r in plan.of_type(INGRESS) if r.inputs["securityGroupId"] == group]


def statements(plan: Plan, policy: str) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in iam.statements_of(plan.named(policy).inputs["policy"])}


def test_default_creates_network_database_bucket_logs_and_master() -> None:
    plan = planned("default")
    assert kinds(plan).count("Vpc") == 1
    subnets = plan.of_type("aws:ec2/subnet:Subnet")
    assert sorted(s.name for s in subnets) == ["private-0", "private-1", "public-0", "public-1"]
    assert {s.inputs["availabilityZone"] for s in subnets} == {"us-east-1a", "us-east-1b"}
    for name in ("igw", "public-routes", "s3-endpoint", "db-subnets", "logs", "master-ip"):
        plan.named(name)
    db = plan.of_type("aws:rds/instance:Instance")[0].inputs
    assert db["storageEncrypted"] is True and db["publiclyAccessible"] is False
    assert db["backupRetentionPeriod"] == 7 and db["instanceClass"] == "db.t3.micro"
    assert plan.named("db-subnets").inputs["subnetIds"] == ["subnet-private-0", "subnet-private-1"]
    assert plan.named("logs").inputs["retentionInDays"] == 30
    master = plan.named("master").inputs
    assert master["metadataOptions"]["httpTokens"] == "required"
    assert master["rootBlockDevice"]["encrypted"] is True
    assert master["subnetId"] == "subnet-public-0"
    assert master["vpcSecurityGroupIds"] == ["sg-master-sg"]
    assert master["iamInstanceProfile"] == "flotilla-demo-master"
    assert plan.named("master-ip").inputs["instance"] == "i-master"
    assert plan.outputs["master_url"] == "http://198.51.100.10:8080"


def test_every_taggable_resource_carries_the_cluster_and_managed_by_tags() -> None:
    for variant in ("default", "local-db", "existing-vpc"):
        for r in planned(variant).resources:
            if r.type in UNTAGGED:
                continue
            tags = r.inputs.get("tags") or {}
            assert tags.get(iam.TAG_DEPLOYMENT) == "demo", (variant, r.name)
            assert tags.get(TAG_MANAGED_BY) == "flotilla", (variant, r.name)


def test_bucket_is_private_encrypted_and_kept_on_destroy() -> None:
    plan = planned("default")
    name = plan.named("checkpoints").inputs["bucket"]
    assert name == "flotilla-demo-123456789012-us-east-1"
    blocks = plan.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert blocks[0].inputs["bucket"] == name
    assert all(blocks[0].inputs[flag] is True for flag in ("blockPublicAcls", "blockPublicPolicy",
               "ignorePublicAcls", "restrictPublicBuckets"))  # fmt: skip
    sse = plan.of_type(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )[0]
    assert sse.inputs["bucket"] == name
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"


def test_security_groups_open_only_what_the_issue_lists() -> None:
    plan = planned("default")
    master = ingress(plan, "sg-master-sg")
    assert {(r.get("cidrIpv4") or r.get("referencedSecurityGroupId"), r.get("fromPort"))
            for r in master} == {("203.0.113.0/24", 8080), ("sg-agent-sg", 8080)}  # fmt: skip
    agents = ingress(plan, "sg-agent-sg")
    assert {r["referencedSecurityGroupId"] for r in agents} == {"sg-master-sg", "sg-agent-sg"}
    assert all(r.get("cidrIpv4") is None for r in agents)
    db = ingress(plan, "sg-db-sg")
    assert db == [
        {
            "securityGroupId": "sg-db-sg",
            "ipProtocol": "tcp",
            "fromPort": 5432,
            "toPort": 5432,
            "referencedSecurityGroupId": "sg-master-sg",
            "description": "PostgreSQL from the master only",
            "tags": db[0]["tags"],
        }
    ]
    assert not [r for r in plan.of_type(INGRESS) if r.inputs.get("fromPort") == 22]


def test_ssh_only_from_the_given_cidr() -> None:
    plan = planned("ssh-spot")
    ssh = [r.inputs for r in plan.of_type(INGRESS) if r.inputs.get("fromPort") == 22]
    assert {r["securityGroupId"] for r in ssh} == {"sg-master-sg", "sg-agent-sg"}
    assert {r["cidrIpv4"] for r in ssh} == {"198.51.100.7/32"}


def test_master_policy_is_scoped_by_tags_and_passes_only_the_agent_role() -> None:
    plan = planned("default")
    master = statements(plan, "master-policy")
    launch = master["LaunchTaggedAgents"]
    assert launch["Condition"] == {"StringEquals": {"aws:RequestTag/flotilla:deployment": "demo"}}
    terminate = master["TerminateOwnAgents"]
    assert terminate["Action"] == "ec2:TerminateInstances"
    assert terminate["Condition"] == {
        "StringEquals": {"ec2:ResourceTag/flotilla:deployment": "demo"}
    }
    assert master["LaunchFromClusterImageAndNetwork"]["Resource"] == [
        "arn:aws:ec2:us-east-1::image/ami-0newestflotilla0",
        "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-public-0",
        "arn:aws:ec2:us-east-1:123456789012:security-group/sg-agent-sg",
    ]
    assert master["PassAgentRoleOnly"]["Resource"] == (
        "arn:aws:iam::123456789012:role/flotilla-demo-agent"
    )
    bucket = "arn:aws:s3:::flotilla-demo-123456789012-us-east-1"
    assert master["CheckpointObjects"]["Resource"] == f"{bucket}/*"
    agent = statements(plan, "agent-policy")
    assert set(agent) == {"ListCheckpointBucket", "CheckpointObjects", "ClusterLogs"}
    for document in (master, agent):
        for statement in document.values():
            actions = statement["Action"] if isinstance(statement["Action"], list) else [
                statement["Action"]]  # fmt: skip
            assert not [a for a in actions if a.endswith("*")], statement
            if statement["Resource"] == "*":
                assert all(a.startswith("ec2:Describe") for a in actions), statement


def test_master_yaml_validates_and_is_wired_to_the_stack() -> None:
    plan = planned("default")
    config = master_config_of(plan)
    assert config.default_resource_pool == "aws"
    pool = config.resource_pools[0]
    assert pool.pool_name == "aws" and pool.provider is not None
    provider = pool.provider
    assert provider.type == "aws" and provider.instance_type == "g4dn.xlarge"
    assert provider.max_instances == 5 and provider.spot is False
    assert provider.image_id == plan.named("master").inputs["ami"]
    assert provider.network_interface.subnet_id == "subnet-public-0"
    assert provider.network_interface.security_group_id == "sg-agent-sg"
    assert provider.iam_instance_profile_arn == (
        "arn:aws:iam::123456789012:instance-profile/flotilla-demo-agent"
    )
    assert [(t.key, t.value) for t in provider.custom_tags] == [("flotilla:deployment", "demo")]
    storage = config.checkpoint_storage
    assert storage is not None and storage.type == "s3"
    assert storage.bucket == plan.named("checkpoints").inputs["bucket"]
    assert config.logging is not None
    assert config.logging.log_group == plan.named("logs").inputs["name"] == "/flotilla/demo"
    assert config.db.host == "flotilla-demo.example.rds.amazonaws.com"
    assert config.db.ssl_mode == "require"
    assert config.agent_join_token == "dry-run-join-token"
    assert config.db.password == "dry-run-db-pw"
    assert config.external_url == "http://10.40.0.5:8080"
    assert "userData" in plan.named("master").secrets


def test_spot_keypair_and_image_reach_the_pool() -> None:
    provider = master_config_of(planned("ssh-spot")).resource_pools[0].provider
    assert provider is not None
    assert provider.spot is True and provider.spot_max_price == 0.4
    assert provider.ssh_key_name == "ops" and provider.image_id == "ami-0123456789abcdef0"


def test_local_db_runs_postgresql_on_the_master() -> None:
    plan = planned("local-db")
    assert not plan.of_type("aws:rds/instance:Instance")
    assert not [r for r in plan.resources if r.name in ("db-sg", "db-subnets")]
    config = master_config_of(plan)
    assert config.db.host == "127.0.0.1" and config.db.ssl_mode == "disable"
    assert 'LOCAL_DB="true"' in plan.named("master").inputs["userData"]


def test_existing_vpc_creates_no_network_and_uses_the_given_subnets() -> None:
    plan = planned("existing-vpc")
    assert not {"Vpc", "Subnet", "InternetGateway", "RouteTable"} & set(kinds(plan))
    groups = plan.of_type("aws:ec2/securityGroup:SecurityGroup")
    assert {g.inputs["vpcId"] for g in groups} == {"vpc-0existing"}
    assert plan.named("master").inputs["subnetId"] == "subnet-0aaa"
    assert plan.named("db-subnets").inputs["subnetIds"] == ["subnet-0aaa", "subnet-0bbb"]
    provider = master_config_of(plan).resource_pools[0].provider
    assert provider is not None and provider.network_interface.subnet_id == "subnet-0aaa"


def _by_name(plan: Plan) -> dict[tuple[str, str], PlannedResource]:
    return {(r.type, r.name): r for r in plan.resources}


def test_rerun_with_more_agents_changes_only_the_masters_user_data() -> None:
    before, after = _by_name(planned("default")), _by_name(planned("more-agents"))
    assert before.keys() == after.keys()
    changed = [key for key in before if before[key].inputs != after[key].inputs]
    assert changed == [("aws:ec2/instance:Instance", "master")]
    diff = {k for k, v in before[changed[0]].inputs.items() if after[changed[0]].inputs[k] != v}
    assert diff == {"userData"}
    provider = master_config_of(planned("more-agents")).resource_pools[0].provider
    assert provider is not None and provider.max_instances == 12


def test_same_settings_render_the_same_resources() -> None:
    from infra.aws.dry_run import plan as run_plan
    from tests.infra_plans import settings

    again = _by_name(run_plan(settings("default")))
    first = _by_name(planned("default"))
    assert again.keys() == first.keys()
    assert [key for key in first if first[key].inputs != again[key].inputs] == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cluster_id", "Demo_1", "not a cluster id"),
        ("inbound_cidr", "203.0.113.1/24", "not a CIDR block"),
        ("log_retention_days", 31, "not a CloudWatch retention"),
        ("subnet_ids", ("subnet-1",), "vpc_id and subnet_ids go together"),
        ("spot_max_price", 0.5, "only with spot"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: Any, message: str) -> None:
    from pydantic import ValidationError

    from infra.aws.settings import AwsDeploySettings
    from tests.infra_plans import BASE

    with pytest.raises(ValidationError, match=message):
        AwsDeploySettings(**{**BASE, field: value})
