"""S3 specifics against moto in server mode: multipart uploads, pagination, batched deletes,
credentials."""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from harness.experiment_config import S3Storage
from harness.storage import build_storage, s3
from harness.storage.s3 import S3StorageManager, make_client
from tests.moto_logs import REGION, moto_server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def storage(endpoint: str) -> S3StorageManager:
    bucket = f"checkpoints-{uuidlib.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=bucket)
    config = S3Storage(
        type="s3",
        bucket=bucket,
        prefix="exp",
        endpoint_url=endpoint,
        access_key="testing",
        secret_key="testing",
    )
    return S3StorageManager(config)


def test_keys_are_prefix_uuid_path_and_big_files_go_up_in_parts(
    storage: S3StorageManager, endpoint: str, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "big.bin").write_bytes(os.urandom(s3.MULTIPART_THRESHOLD + 1))
    (tmp_path / "small.bin").write_bytes(b"s")
    storage.upload(tmp_path, "u1")

    s3client = client(endpoint)
    listed = s3client.list_objects_v2(Bucket=storage.bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == ["exp/u1/d/big.bin", "exp/u1/small.bin"]
    # A multipart upload's ETag is "<md5 of part md5s>-<part count>".
    assert s3client.head_object(Bucket=storage.bucket, Key="exp/u1/d/big.bin")["ETag"].endswith(
        '-2"'
    )
    assert "-" not in s3client.head_object(Bucket=storage.bucket, Key="exp/u1/small.bin")["ETag"]
    assert storage.location("u1") == f"s3://{storage.bucket}/exp/u1/"


def test_listing_and_deleting_go_through_every_page(
    storage: S3StorageManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3, "LIST_PAGE_SIZE", 2)
    monkeypatch.setattr(s3, "DELETE_BATCH", 2)
    calls: list[str] = []
    for operation in ("ListObjectsV2", "DeleteObjects"):
        storage.client.meta.events.register(
            f"before-call.s3.{operation}", lambda operation=operation, **_: calls.append(operation)
        )
    for i in range(7):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
    storage.upload(tmp_path, "u1")
    calls.clear()

    assert storage.files("u1") == {f"f{i}": i for i in range(7)}
    assert calls == ["ListObjectsV2"] * 4
    calls.clear()
    storage.delete("u1")
    assert calls == ["ListObjectsV2"] * 4 + ["DeleteObjects"] * 4
    assert list(storage._list("exp/")) == []


def test_directory_markers_from_other_tools_are_not_files(
    storage: S3StorageManager, endpoint: str, tmp_path: Path
) -> None:
    s3client = client(endpoint)
    s3client.put_object(Bucket=storage.bucket, Key="exp/u1/", Body=b"")
    s3client.put_object(Bucket=storage.bucket, Key="exp/u1/sub/", Body=b"")
    s3client.put_object(Bucket=storage.bucket, Key="exp/u1/sub/f", Body=b"ff")
    assert storage.files("u1") == {"sub/f": 2}
    storage.download("u1", tmp_path)
    assert (tmp_path / "sub" / "f").read_bytes() == b"ff"
    storage.delete("u1")
    assert s3client.list_objects_v2(Bucket=storage.bucket).get("Contents", []) == []


def test_keys_that_would_escape_the_download_directory_are_refused(
    storage: S3StorageManager, endpoint: str, tmp_path: Path
) -> None:
    client(endpoint).put_object(Bucket=storage.bucket, Key="exp/u1/../../evil", Body=b"x")
    with pytest.raises(ValueError, match="not a plain relative path"):
        storage.download("u1", tmp_path / "dst")
    assert not (tmp_path / "evil").exists()


def credentials(manager: Any) -> Any:
    return manager.client._request_signer._credentials


def test_explicit_keys_win_over_the_default_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
    explicit = build_storage(
        {"type": "s3", "bucket": "b", "access_key": "AKIA", "secret_key": "shh"}
    )
    assert (credentials(explicit).access_key, credentials(explicit).secret_key) == ("AKIA", "shh")
    chain = build_storage({"type": "s3", "bucket": "b"})
    assert credentials(chain).access_key == "from-env"


def test_half_a_key_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="access_key and secret_key together"):
        make_client(S3Storage(type="s3", bucket="b", access_key="AKIA"))


def test_endpoint_url_is_used(endpoint: str) -> None:
    manager = build_storage(
        {
            "type": "s3",
            "bucket": "b",
            "endpoint_url": endpoint,
            "access_key": "a",
            "secret_key": "b",
        }
    )
    assert isinstance(manager, S3StorageManager)
    assert manager.client.meta.endpoint_url == endpoint
