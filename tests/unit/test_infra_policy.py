"""The policy pack's AWS rules, run by ``infra.policy.runner`` on the resources the program
registers under Pulumi's mocks: the real plan passes, and one bad variant per policy is caught."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from infra.common.plan import PlannedResource
from infra.policy import aws as aws_rules
from infra.policy.pack import all_policies
from infra.policy.runner import Violation, check
from tests.infra_plans import VARIANTS, planned

Mutation = Callable[[list[PlannedResource]], list[PlannedResource]]


def violations(resources: list[PlannedResource]) -> list[Violation]:
    return check(resources, all_policies(), project="flotilla-aws", stack="demo")


def replace(name: str, **inputs: Any) -> Mutation:
    """The plan with ``inputs`` merged into resource ``name``'s."""

    def mutate(resources: list[PlannedResource]) -> list[PlannedResource]:
        return [
            dataclasses.replace(r, inputs={**r.inputs, **inputs}) if r.name == name else r
            for r in resources
        ]

    return mutate


def drop(type_token: str) -> Mutation:
    return lambda resources: [r for r in resources if r.type != type_token]


def add(type_token: str, name: str, **inputs: Any) -> Mutation:
    return lambda resources: [*resources, PlannedResource(type_token, name, inputs)]


STAR = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_of_the_program_passes(variant: str) -> None:
    assert violations(planned(variant).resources) == []


@pytest.mark.parametrize(
    ("policy", "mutation", "resource", "message"),
    [
        ("iam-no-star-on-star", replace("agent-policy", policy=STAR), "agent-policy",
         "every action on every resource"),
        ("iam-no-star-on-star",
         add(aws_rules.ATTACHMENT_TYPES[0], "admin", role="r",
             policyArn="arn:aws:iam::aws:policy/AdministratorAccess"),
         "admin", "AdministratorAccess"),
        ("ec2-imdsv2-required",
         replace("master", metadataOptions={"httpTokens": "optional"}), "master", "IMDSv2"),
        ("s3-private-encrypted", drop(aws_rules.PUBLIC_ACCESS_BLOCK), "checkpoints",
         "no public access block"),
        ("s3-private-encrypted",
         replace("checkpoints", blockPublicPolicy=False, bucket="flotilla-demo-x"),
         "checkpoints", "no public access block"),
        ("s3-private-encrypted", drop(aws_rules.BUCKET_ENCRYPTION_TYPES[0]), "checkpoints",
         "no default server-side encryption"),
        ("s3-private-encrypted",
         add(aws_rules.BUCKET_ACL_TYPES[0], "acl", bucket="flotilla-demo-123456789012-us-east-1",
             acl="public-read"),
         "checkpoints", "public ACL"),
        ("no-ssh-from-world",
         add(aws_rules.INGRESS_RULE, "ssh-world", securityGroupId="sg-master-sg",
             ipProtocol="tcp", fromPort=22.0, toPort=22.0, cidrIpv4="0.0.0.0/0"),
         "ssh-world", "port 22"),
        ("no-ssh-from-world",
         add(aws_rules.INGRESS_RULE, "all-world", securityGroupId="sg-agent-sg",
             ipProtocol="-1", cidrIpv6="::/0"),
         "all-world", "::/0"),
        ("no-ssh-from-world",
         replace("master-sg", ingress=[{"protocol": "tcp", "fromPort": 0, "toPort": 1024,
                                        "cidrBlocks": ["0.0.0.0/0"]}]),
         "master-sg", "port 22"),
        ("rds-private-encrypted", replace("db", publiclyAccessible=True), "db",
         "publiclyAccessible"),
        ("rds-private-encrypted", replace("db", storageEncrypted=False), "db",
         "storageEncrypted"),
    ],
)  # fmt: skip
def test_a_bad_variant_is_caught(
    policy: str, mutation: Mutation, resource: str, message: str
) -> None:
    found = violations(mutation(list(planned("default").resources)))
    assert [(v.policy, v.resource) for v in found] == [(policy, resource)]
    assert message in found[0].message


def test_ssh_from_a_narrow_cidr_and_world_on_other_ports_are_allowed() -> None:
    resources = add(
        aws_rules.INGRESS_RULE, "https-world", securityGroupId="sg-master-sg",
        ipProtocol="tcp", fromPort=443.0, toPort=443.0, cidrIpv4="0.0.0.0/0",
    )(list(planned("ssh-spot").resources))  # fmt: skip
    assert violations(resources) == []


def test_the_pack_holds_every_aws_policy_once() -> None:
    names = [p.name for p in all_policies()]
    assert len(names) == len(set(names))
    assert {p.name for p in aws_rules.POLICIES} <= set(names)
    assert set(names) >= {
        "iam-no-star-on-star",
        "ec2-imdsv2-required",
        "s3-private-encrypted",
        "no-ssh-from-world",
        "rds-private-encrypted",
    }
