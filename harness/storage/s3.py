"""Checkpoints in S3 or an S3-compatible store (MinIO, moto): ``s3://bucket/prefix/<uuid>/…``.

boto3 does the heavy lifting: its managed transfer splits big files into concurrent multipart
uploads (and ranged downloads), and credentials come from its usual chain (environment, shared
config files, instance profile) unless the config names ``access_key``/``secret_key``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from harness.experiment_config import S3Storage
from harness.storage.base import ObjectStorage

MULTIPART_THRESHOLD = 8 * 1024 * 1024
"""Files from this size on go up in parts (boto3's default, stated so tests can rely on it)."""
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024
LIST_PAGE_SIZE = 1000
"""Keys per ``ListObjectsV2`` page (S3's maximum); listing follows every page."""
DELETE_BATCH = 1000
"""``DeleteObjects`` takes at most 1000 keys per call."""


class S3StorageError(RuntimeError):
    """S3 refused part of a request that boto3 does not raise for (per-key delete errors)."""


def make_client(config: S3Storage) -> Any:
    """An S3 client for ``config``: explicit keys if given, else boto3's default chain."""
    if (config.access_key is None) != (config.secret_key is None):
        raise ValueError("checkpoint_storage: give access_key and secret_key together, or neither")
    kwargs: dict[str, Any] = {}
    if config.endpoint_url:
        kwargs["endpoint_url"] = config.endpoint_url
    if config.access_key is not None:
        kwargs["aws_access_key_id"] = config.access_key
        kwargs["aws_secret_access_key"] = config.secret_key
    return boto3.session.Session().client("s3", **kwargs)


class S3StorageManager(ObjectStorage):
    """The :class:`~harness.storage.StorageManager` for ``type: s3``."""

    scheme = "s3"

    def __init__(self, config: S3Storage, client: Any | None = None) -> None:
        super().__init__(config.bucket, config.prefix)
        # A session per manager: boto3's module-level default session is not thread-safe.
        self.client = client if client is not None else make_client(config)
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE
        )

    def _put_file(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), self.bucket, key, Config=self.transfer)

    def _get_file(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, key, str(path), Config=self.transfer)

    def _list(self, prefix: str) -> Iterator[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"], int(item["Size"])

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            answer = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise S3StorageError(
                    f"could not delete {len(errors)} object(s) from s3://{self.bucket}/, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
