"""Where Pulumi keeps the state of AWS deployments: by default an S3 bucket of the account,
``s3://flotilla-pulumi-state-<account>-<region>``, made on the first ``up`` (versioned, so a bad
update can be rolled back by hand; encrypted; public access blocked). ``--state URL`` (e.g.
``file://~/.flotilla/pulumi``) uses any backend Pulumi accepts instead.

S3 quirk: ``CreateBucket`` in us-east-1 must not name a location constraint; everywhere else
it must."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from infra.common.automation import DeployError

STATE_BUCKET_PREFIX = "flotilla-pulumi-state"


def session(region: str) -> Any:
    """A boto3 session for ``region`` (credentials from boto3's usual chain)."""
    return boto3.session.Session(region_name=region)


def backend_url(
    aws: Any, region: str, state: str | None, account: str | None = None, *, create: bool = False
) -> str:
    """``state`` if given, else the default state bucket's URL; ``create`` makes the bucket if
    it is missing (``up``), otherwise a missing bucket means nothing was deployed with the
    default state (``down``, ``list``). Errors reaching AWS are a DeployError."""
    if state:
        return state
    try:
        if account is None:
            account = str(aws.client("sts").get_caller_identity()["Account"])
        bucket = default_state_bucket(account, region)
        s3 = aws.client("s3", region_name=region)
        if create:
            return ensure_state_bucket(s3, bucket, region)
        if not bucket_exists(s3, bucket):
            raise DeployError(
                f"no Pulumi state bucket s3://{bucket}: nothing was deployed in {region} with "
                "the default state (pass --state if up used another)"
            )
        return state_url(bucket, region)
    except (ClientError, BotoCoreError) as e:
        raise DeployError(f"cannot reach the Pulumi state bucket in {region}: {e}") from e


def state_url(bucket: str, region: str) -> str:
    return f"s3://{bucket}?region={region}"


def bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise
    return True


def default_state_bucket(account: str, region: str) -> str:
    return f"{STATE_BUCKET_PREFIX}-{account}-{region}"


def ensure_state_bucket(s3: Any, bucket: str, region: str) -> str:
    """Create the state bucket if it does not exist; its ``s3://`` backend URL."""
    if not bucket_exists(s3, bucket):
        location = {} if region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": region}}  # fmt: skip
        s3.create_bucket(Bucket=bucket, **location)
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return f"s3://{bucket}?region={region}"
