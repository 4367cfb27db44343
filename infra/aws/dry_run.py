"""``det deploy aws up --dry-run``: the AWS program under mocks, its plan, the policies' verdict
and the monthly estimate, with no credentials and no Pulumi CLI.

What the mocks stand in for: resource ids are ``<prefix><logical name>`` (``sg-master-sg``), the
account is ``123456789012``, the image is the newest one agent_image/ would have built (unless
``--image-id``), addresses come from the documentation ranges. The resource graph, the rules and
the IAM statements are exactly what ``up`` would send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.aws import iam
from infra.aws.program import JOIN_TOKEN_KEY, PROJECT, program
from infra.aws.settings import AwsDeploySettings
from infra.common.cost import Estimate, PriceLookupError, PriceTable
from infra.common.plan import Plan, PlannedResource, PlanSection, render_plan, run_program
from infra.policy.pack import all_policies
from infra.policy.runner import Violation, check

PRICE_TABLE = Path(__file__).with_name("prices.json")
DRY_RUN_ACCOUNT = "123456789012"
DRY_RUN_IMAGE = "ami-0newestflotilla0"
DRY_RUN_PUBLIC_IP = "198.51.100.10"  # RFC 5737 documentation range
DRY_RUN_SECRETS = {JOIN_TOKEN_KEY: "dry-run-join-token", "flotilla:dbPassword": "dry-run-db-pw"}

# Id prefixes as AWS spells them, by resource kind.
_ID_PREFIX = {
    "Vpc": "vpc-",
    "Subnet": "subnet-",
    "SecurityGroup": "sg-",
    "InternetGateway": "igw-",
    "RouteTable": "rtb-",
    "Instance": "i-",
    "Eip": "eipalloc-",
    "VpcEndpoint": "vpce-",
}


def _computed(type_token: str, name: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = type_token.rsplit(":", 1)[-1]
    out: dict[str, Any] = {"id": _ID_PREFIX.get(kind, "") + name}
    if type_token in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
        path = "role" if kind == "Role" else "instance-profile"
        out["arn"] = f"arn:aws:iam::{DRY_RUN_ACCOUNT}:{path}/{inputs.get('name', name)}"
        out["id"] = inputs.get("name", name)
    elif type_token == "aws:rds/instance:Instance":
        out["address"] = f"{inputs.get('identifier', name)}.example.rds.amazonaws.com"
    elif type_token == "aws:ec2/eip:Eip":
        out["publicIp"] = DRY_RUN_PUBLIC_IP
    elif type_token == "aws:rds/subnetGroup:SubnetGroup":
        out["id"] = inputs.get("name", name)
    return out


def _calls(region: str) -> Any:
    def calls(token: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{region}{zone}" for zone in "abc"]
            return {"id": region, "names": names, "zoneIds": names}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            arn = f"arn:aws:iam::{DRY_RUN_ACCOUNT}:user/you"
            return {
                "id": DRY_RUN_ACCOUNT,
                "accountId": DRY_RUN_ACCOUNT,
                "arn": arn,
                "userId": "you",
            }
        if token == "aws:ec2/getAmi:getAmi":
            return {"id": DRY_RUN_IMAGE, "imageId": DRY_RUN_IMAGE}
        raise KeyError(f"the dry run has no mocked result for {token}")

    return calls


def plan(settings: AwsDeploySettings, secrets: Mapping[str, str] = DRY_RUN_SECRETS) -> Plan:
    """The AWS program for ``settings`` under mocks (provider registrations left out)."""
    return run_program(
        program(settings),
        project=PROJECT,
        stack=settings.cluster_id,
        config={"aws:region": settings.region, **secrets},
        computed=_computed,
        calls=_calls(settings.region),
    ).without_providers()


# -- what the plan shows ------------------------------------------------------------------------

_KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone"),
    "aws:ec2/routeTable:RouteTable": ("routes",),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName", "vpcEndpointType"),
    "aws:ec2/securityGroup:SecurityGroup": ("description",),
    "aws:s3/bucket:Bucket": ("bucket",),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "rules",
    ),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "retentionInDays"),
    "aws:iam/role:Role": ("name",),
    "aws:iam/instanceProfile:InstanceProfile": ("name", "role"),
    "aws:rds/subnetGroup:SubnetGroup": ("name", "subnetIds"),
    "aws:rds/instance:Instance": (
        "identifier",
        "engine",
        "engineVersion",
        "instanceClass",
        "allocatedStorage",
        "storageType",
        "storageEncrypted",
        "publiclyAccessible",
        "backupRetentionPeriod",
    ),
    "aws:ec2/instance:Instance": (
        "instanceType",
        "ami",
        "subnetId",
        "keyName",
        "associatePublicIpAddress",
        "metadataOptions",
        "rootBlockDevice",
        "iamInstanceProfile",
    ),
    "aws:ec2/eip:Eip": ("domain", "instance"),
}
_RULE_TYPES = (
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
)


def key_settings(resource: PlannedResource) -> dict[str, Any]:
    keys = _KEY_SETTINGS.get(resource.type, ())
    shown = {key: resource.inputs.get(key) for key in keys}
    if "rootBlockDevice" in shown and isinstance(shown["rootBlockDevice"], dict):
        shown["rootBlockDevice"] = {
            k: v for k, v in shown["rootBlockDevice"].items() if k != "tags"
        }
    return shown


def _ports(inputs: Mapping[str, Any]) -> str:
    if inputs.get("ipProtocol") in ("-1", "all"):
        return "all traffic"
    low, high = int(inputs.get("fromPort", 0)), int(inputs.get("toPort", 0))
    return f"{inputs.get('ipProtocol')} {low}" + (f"-{high}" if high != low else "")


def rule_lines(resources: list[PlannedResource]) -> list[str]:
    lines = []
    for r in resources:
        if r.type not in _RULE_TYPES:
            continue
        inbound = r.type == _RULE_TYPES[0]
        peer = (
            r.inputs.get("cidrIpv4")
            or r.inputs.get("cidrIpv6")
            or f"group {r.inputs.get('referencedSecurityGroupId', '?')}"
        )
        group = r.inputs.get("securityGroupId")
        arrow = f"{group} <- {peer}" if inbound else f"{group} -> {peer}"
        lines.append(f"{arrow:<40} {_ports(r.inputs):<12} {r.inputs.get('description', '')}")
    return sorted(lines)


def _statement_line(statement: Mapping[str, Any]) -> str:
    actions = statement.get("Action")
    resources = statement.get("Resource")
    text = f"{statement.get('Sid', '')}: {statement.get('Effect')} {json.dumps(actions)} on "
    text += json.dumps(resources)
    if statement.get("Condition"):
        text += f" if {json.dumps(statement['Condition'], sort_keys=True)}"
    return text


def iam_lines(resources: list[PlannedResource]) -> list[str]:
    lines = []
    for r in sorted(resources, key=lambda r: r.name):
        if r.type != "aws:iam/rolePolicy:RolePolicy":
            continue
        lines.append(f"{r.name} (role {r.inputs.get('role')}):")
        lines += [f"  {_statement_line(s)}" for s in iam.statements_of(r.inputs["policy"])]
    return lines


# -- the estimate -------------------------------------------------------------------------------


def estimate(settings: AwsDeploySettings, resources: list[PlannedResource]) -> Estimate:
    """The monthly cost of what the plan creates, from the shipped table; agents are extra."""
    table = PriceTable.load(PRICE_TABLE)
    result = Estimate(table, settings.region)
    for r in sorted(resources, key=lambda r: r.name):
        if r.type == "aws:ec2/instance:Instance":
            kind = str(r.inputs["instanceType"])
            result.hourly(f"{r.name} instance {kind}", "ec2_instance_hour", kind)
            root = r.inputs.get("rootBlockDevice") or {}
            volume = str(root.get("volumeType", "gp3"))
            result.monthly(
                f"{r.name} root volume {volume}",
                float(root.get("volumeSize", 8)),
                "GB-month",
                "ebs_gb_month",
                volume,
            )
        elif r.type == "aws:rds/instance:Instance":
            kind = str(r.inputs["instanceClass"])
            result.hourly(f"{r.name} RDS PostgreSQL {kind}", "rds_instance_hour", kind)
            storage = str(r.inputs.get("storageType", "gp3"))
            result.monthly(
                f"{r.name} RDS storage {storage}",
                float(r.inputs["allocatedStorage"]),
                "GB-month",
                "rds_gb_month",
                storage,
            )
        elif r.type == "aws:ec2/eip:Eip":
            result.hourly(f"{r.name} public IPv4 address", "public_ipv4_hour", "public_ipv4")
    s3 = table.price(settings.region, "s3_gb_month", "standard")
    logs = table.price(settings.region, "logs_gb", "ingested")
    result.notes += [
        f"checkpoints in S3: ${s3}/GB-month as they accumulate; logs: ${logs}/GB ingested",
        "free: VPC, subnets, internet gateway, security groups, S3 gateway endpoint, IAM; "
        "RDS backups up to the database's size",
        f"agents are extra: {settings.agent_instance_type} per instance-hour while they run, "
        f"up to {settings.max_dynamic_agents} at once"
        + (" (spot)" if settings.spot else "")
        + f"; {_agent_price(settings)}",
    ]
    return result


def _agent_price(settings: AwsDeploySettings) -> str:
    from provisioner.prices import PriceBook, UnknownInstanceType

    try:
        price = PriceBook({}).on_demand(settings.agent_instance_type)
    except UnknownInstanceType:
        return "its price is not in the provisioner's table"
    return f"${price}/hour on-demand in us-east-1 (provisioner price table)"


@dataclass(frozen=True)
class DryRun:
    """The plan's text (resources, rules, IAM, the policies' verdict), the estimate's, and the
    violations (none for a plan ``up`` would accept)."""

    plan: str
    estimate: str
    violations: list[Violation]


def render(settings: AwsDeploySettings) -> DryRun:
    """Run the program under mocks and render what it would do."""
    result = plan(settings)
    violations = check(result.resources, all_policies(), project=PROJECT, stack=settings.cluster_id)
    verdict = [str(v) for v in violations] or ["all policies pass"]
    title = (
        f"Plan for Flotilla cluster {settings.cluster_id!r} in {settings.region} "
        f"({len(result.resources)} resources; dry run: account {DRY_RUN_ACCOUNT} and ids stand "
        f"in for yours)"
    )
    text = render_plan(
        title,
        result.resources,
        key_settings,
        [
            PlanSection("Security group rules", rule_lines(result.resources)),
            PlanSection("IAM statements", iam_lines(result.resources)),
            PlanSection("Policy pack (mandatory on up)", verdict),
        ],
    )
    try:
        cost = estimate(settings, result.resources).render()
    except PriceLookupError as e:
        cost = f"No monthly estimate: {e}"
    return DryRun(text, cost, violations)
