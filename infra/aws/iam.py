"""The IAM policy documents of a deployment, as pure functions of names the stack knows.

How EC2's authorization works, and what that means for least privilege here:

- ``RunInstances`` is authorized against every resource it touches: the instance, its volumes,
  network interfaces and spot request (which are *created*: ``aws:RequestTag`` conditions apply),
  and the image, subnet, security group and key pair it *uses* (no request tags: they are
  named by ARN instead). So there are two RunInstances statements.
- Tagging at launch needs ``ec2:CreateTags`` with ``ec2:CreateAction = RunInstances``; without
  it the tagged launch is refused. The provider always tags at launch.
- ``TerminateInstances`` is limited by ``ec2:ResourceTag``: the master can end only instances
  carrying its deployment's tag, never anyone else's.
- ``Describe*`` calls support no resource-level permissions; AWS requires ``Resource: "*"`` for
  them. They are named one by one (never ``ec2:*``), and they read, never change.
- ``iam:PassRole`` is what lets a launch attach the agents' instance profile; it is limited to the
  agent role and to EC2.
- S3 object actions are on ``<bucket>/*``, listing on the bucket; CloudWatch Logs actions on the
  group and its streams.
"""

from __future__ import annotations

import json
from typing import Any

TAG_DEPLOYMENT = "flotilla:deployment"

# What the AWS provider (provisioner/aws.py) and its price lookups call that reads only.
EC2_DESCRIBE_ACTIONS = [
    "ec2:DescribeInstances",
    "ec2:DescribeImages",
    "ec2:DescribeSubnets",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeAvailabilityZones",
]
CREATED_BY_LAUNCH = ("instance", "volume", "network-interface", "spot-instances-request")
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
BUCKET_ACTIONS = ["s3:ListBucket", "s3:GetBucketLocation"]
# The log shipper creates its streams and, owning the group, sets its retention (it tolerates a
# refusal of CreateLogGroup/PutRetentionPolicy for a group made by infra).
LOG_ACTIONS = [
    "logs:CreateLogGroup",
    "logs:PutRetentionPolicy",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "logs:DescribeLogStreams",
]


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def assume_role_document(service: str = "ec2.amazonaws.com") -> str:
    return document(
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    )


def storage_statements(bucket: str, log_group_arn: str) -> list[dict[str, Any]]:
    """Read and write the checkpoint bucket and ship logs to the cluster's group: what master
    and agents both need."""
    bucket_arn = f"arn:aws:s3:::{bucket}"
    return [
        {"Sid": "ListCheckpointBucket", "Effect": "Allow", "Action": BUCKET_ACTIONS,
         "Resource": bucket_arn},
        {"Sid": "CheckpointObjects", "Effect": "Allow", "Action": OBJECT_ACTIONS,
         "Resource": f"{bucket_arn}/*"},
        {"Sid": "ClusterLogs", "Effect": "Allow", "Action": LOG_ACTIONS,
         "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"]},
    ]  # fmt: skip


def master_document(
    *,
    region: str,
    account: str,
    cluster_id: str,
    image_id: str,
    subnet_id: str,
    agent_security_group_id: str,
    keypair: str | None,
    agent_role_arn: str,
    bucket: str,
    log_group_arn: str,
) -> str:
    """The master's policy: launch, tag and terminate its own agents, pass the agent role, use
    the bucket and the log group."""
    ec2 = f"arn:aws:ec2:{region}:{account}"
    created = [f"{ec2}:{kind}/*" for kind in CREATED_BY_LAUNCH]
    used = [
        f"arn:aws:ec2:{region}::image/{image_id}",
        f"{ec2}:subnet/{subnet_id}",
        f"{ec2}:security-group/{agent_security_group_id}",
    ]
    if keypair:
        used.append(f"{ec2}:key-pair/{keypair}")
    own_tag = {"StringEquals": {f"aws:RequestTag/{TAG_DEPLOYMENT}": cluster_id}}
    statements: list[dict[str, Any]] = [
        {"Sid": "LaunchTaggedAgents", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": created, "Condition": own_tag},
        {"Sid": "LaunchFromClusterImageAndNetwork", "Effect": "Allow",
         "Action": "ec2:RunInstances", "Resource": used},
        {"Sid": "TagAtLaunch", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": created,
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        {"Sid": "TerminateOwnAgents", "Effect": "Allow", "Action": "ec2:TerminateInstances",
         "Resource": f"{ec2}:instance/*",
         "Condition": {"StringEquals": {f"ec2:ResourceTag/{TAG_DEPLOYMENT}": cluster_id}}},
        {"Sid": "DescribeOnly", "Effect": "Allow", "Action": EC2_DESCRIBE_ACTIONS,
         "Resource": "*"},
        {"Sid": "PassAgentRoleOnly", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": agent_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
    ]  # fmt: skip
    return document(*statements, *storage_statements(bucket, log_group_arn))


def agent_document(*, bucket: str, log_group_arn: str) -> str:
    """The agents' policy: the bucket and the log group, nothing else."""
    return document(*storage_statements(bucket, log_group_arn))


def statements_of(policy: str) -> list[dict[str, Any]]:
    parsed = json.loads(policy)
    statements = parsed.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]
