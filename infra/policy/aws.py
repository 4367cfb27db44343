"""AWS rules of the pack. Each looks only at ``aws:`` type tokens, reads properties in the
engine's camelCase, and treats numbers as possibly floats (the engine's JSON numbers). Under the
engine, lists and maps arrive as pulumi_policy's read-only proxies (a ``Sequence`` and a
``Mapping``, not ``list`` and ``dict``), so the rules test for those abstract types.

- ``iam-no-star-on-star``: no Allow statement with action ``*`` (or ``*:*``) on resource ``*``
  in any inline or managed policy, and no attachment of AWS's ``AdministratorAccess``.
- ``ec2-imdsv2-required``: instances and launch templates require IMDSv2 session tokens.
- ``s3-private-encrypted``: every bucket has a public access block with all four settings on and
  a default server-side encryption configuration, and no public ACL. Buckets are matched to
  those resources by name, so buckets must be named explicitly (not only a prefix).
- ``no-ssh-from-world``: no ingress from ``0.0.0.0/0`` or ``::/0`` that includes port 22.
- ``rds-private-encrypted``: database instances are not publicly accessible and are encrypted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    ReportViolation,
    ResourceValidationArgs,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy.pack import resource_policy

SSH_PORT = 22
WORLD = ("0.0.0.0/0", "::/0")
ALL_PROTOCOLS = ("-1", "all")
ADMIN_POLICY_SUFFIX = ":policy/AdministratorAccess"
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
PUBLIC_ACCESS_BLOCK_FLAGS = (
    "blockPublicAcls",
    "blockPublicPolicy",
    "ignorePublicAcls",
    "restrictPublicBuckets",
)

IAM_POLICY_TYPES = (
    "aws:iam/policy:Policy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
)
ATTACHMENT_TYPES = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
)
INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
BUCKET = "aws:s3/bucket:Bucket"
BUCKET_TYPES = (BUCKET, "aws:s3/bucketV2:BucketV2")
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_ENCRYPTION_TYPES = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
BUCKET_ACL_TYPES = ("aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2")
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
DB_INSTANCE = "aws:rds/instance:Instance"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return [value]


def _document(value: Any) -> Mapping[str, Any]:
    """An IAM policy document from a property: JSON text or an already-parsed mapping."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return value if isinstance(value, Mapping) else {}


def star_on_star_statements(document: Any) -> list[Mapping[str, Any]]:
    """The Allow statements of ``document`` that grant every action on every resource."""
    found = []
    for statement in _as_list(_document(document).get("Statement")):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            continue
        actions = _as_list(statement.get("Action"))
        resources = _as_list(statement.get("Resource"))
        if any(a in ("*", "*:*") for a in actions) and "*" in resources:
            found.append(statement)
    return found


def _iam_no_star(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type in IAM_POLICY_TYPES:
        for statement in star_on_star_statements(args.props.get("policy")):
            sid = statement.get("Sid", "")
            report(f"statement {sid!r} allows every action on every resource ('*' on '*')", None)
    elif args.resource_type in ATTACHMENT_TYPES:
        arn = str(args.props.get("policyArn", ""))
        if arn.endswith(ADMIN_POLICY_SUFFIX):
            report(f"attaches {arn}, which allows '*' on '*'", None)


def _imdsv2(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in (INSTANCE, LAUNCH_TEMPLATE):
        return
    options = args.props.get("metadataOptions") or {}
    if options.get("httpTokens") != "required":
        report("metadataOptions.httpTokens must be 'required' (IMDSv2 only)", None)


def _bucket_name(props: Any) -> Any:
    return props.get("bucket")


def _s3_private_encrypted(args: StackValidationArgs, report: ReportViolation) -> None:
    resources = args.resources
    blocked = {
        _bucket_name(r.props)
        for r in resources
        if r.resource_type == PUBLIC_ACCESS_BLOCK
        and all(r.props.get(flag) is True for flag in PUBLIC_ACCESS_BLOCK_FLAGS)
    }
    encrypted = {
        _bucket_name(r.props)
        for r in resources
        if r.resource_type in BUCKET_ENCRYPTION_TYPES
        and any(
            (rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
            for rule in _as_list(r.props.get("rules"))
            if isinstance(rule, Mapping)
        )
    }
    public_acl = {
        _bucket_name(r.props)
        for r in resources
        if r.resource_type in BUCKET_ACL_TYPES and r.props.get("acl") in PUBLIC_ACLS
    }
    for bucket in (r for r in resources if r.resource_type in BUCKET_TYPES):
        name = _bucket_name(bucket.props)
        if not isinstance(name, str) or not name:
            report(
                "name the bucket explicitly so its access block and encryption can be checked",
                bucket.urn,
            )
            continue
        if bucket.props.get("acl") in PUBLIC_ACLS or name in public_acl:
            report(f"bucket {name} has a public ACL", bucket.urn)
        if name not in blocked:
            report(
                f"bucket {name} has no public access block with all four settings on", bucket.urn
            )
        if name not in encrypted:
            report(f"bucket {name} has no default server-side encryption", bucket.urn)


def _covers_ssh(protocol: Any, from_port: Any, to_port: Any) -> bool:
    if str(protocol).lower() in ALL_PROTOCOLS:
        return True
    if str(protocol).lower() not in ("tcp", "6"):
        return False
    try:
        return int(float(from_port)) <= SSH_PORT <= int(float(to_port))
    except (TypeError, ValueError):
        return True  # unknown ports: assume the worst


def _world_cidrs(rule: Mapping[str, Any]) -> list[str]:
    cidrs = _as_list(rule.get("cidrBlocks")) + _as_list(rule.get("ipv6CidrBlocks"))
    cidrs += _as_list(rule.get("cidrIpv4")) + _as_list(rule.get("cidrIpv6"))
    return [c for c in cidrs if c in WORLD]


def _ingress_rules(args: ResourceValidationArgs) -> Iterable[Mapping[str, Any]]:
    props = args.props
    if args.resource_type == SECURITY_GROUP:
        yield from (r for r in _as_list(props.get("ingress")) if isinstance(r, Mapping))
    elif args.resource_type == SECURITY_GROUP_RULE and props.get("type") == "ingress":
        yield props
    elif args.resource_type == INGRESS_RULE:
        yield {
            "protocol": props.get("ipProtocol"),
            "fromPort": props.get("fromPort", 0),
            "toPort": props.get("toPort", 65535),
            "cidrIpv4": props.get("cidrIpv4"),
            "cidrIpv6": props.get("cidrIpv6"),
        }


def _no_ssh_from_world(args: ResourceValidationArgs, report: ReportViolation) -> None:
    for rule in _ingress_rules(args):
        world = _world_cidrs(rule)
        if world and _covers_ssh(rule.get("protocol"), rule.get("fromPort"), rule.get("toPort")):
            report(f"ingress from {', '.join(world)} reaches port {SSH_PORT} (SSH)", None)


def _rds_private(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != DB_INSTANCE:
        return
    if args.props.get("publiclyAccessible") is True:
        report("publiclyAccessible must be false", None)
    if args.props.get("storageEncrypted") is not True:
        report("storageEncrypted must be true", None)


POLICIES: list[Any] = [
    resource_policy(
        "iam-no-star-on-star", "No IAM statement allows '*' actions on '*'.", _iam_no_star
    ),
    resource_policy("ec2-imdsv2-required", "Instances require IMDSv2.", _imdsv2),
    StackValidationPolicy(
        name="s3-private-encrypted",
        description="Buckets block public access and are encrypted by default.",
        validate=_s3_private_encrypted,
    ),
    resource_policy(
        "no-ssh-from-world", "No ingress from anywhere reaches port 22.", _no_ssh_from_world
    ),
    resource_policy(
        "rds-private-encrypted", "Databases are not public and are encrypted.", _rds_private
    ),
]
