"""Where deployments keep their Pulumi state: the default bucket, made by ``up`` only (versioned,
encrypted, public access blocked), against moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.aws.state import backend_url
from infra.common.automation import DeployError

BUCKET = "flotilla-pulumi-state-123456789012-eu-west-1"


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name="eu-west-1")


def test_an_explicit_state_url_is_used_as_is(session: Any) -> None:
    assert backend_url(session, "eu-west-1", "file:///tmp/state") == "file:///tmp/state"


def test_down_and_list_do_not_create_the_bucket(session: Any) -> None:
    with pytest.raises(DeployError, match=f"no Pulumi state bucket s3://{BUCKET}"):
        backend_url(session, "eu-west-1", None)
    assert session.client("s3").list_buckets()["Buckets"] == []


def test_up_creates_a_private_encrypted_versioned_bucket_once(session: Any) -> None:
    url = backend_url(session, "eu-west-1", None, create=True)
    assert url == f"s3://{BUCKET}?region=eu-west-1"
    s3 = session.client("s3")
    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == "eu-west-1"
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    rules = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert backend_url(session, "eu-west-1", None, create=True) == url
    assert backend_url(session, "eu-west-1", None) == url
