"""Checkpoint storage: one interface over a shared directory, S3 and GCS.

Trials write checkpoints through it on agents; the master uses the same managers to stream a
checkpoint to ``det checkpoint download`` and to delete what the ``save_*`` policies no longer
keep (:mod:`harness.storage.gc`). Backends are imported only when built, so a harness that
checkpoints to a shared directory does not need boto3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from harness.experiment_config import (
    CheckpointStorage,
    GCSStorage,
    S3Storage,
    SharedFSStorage,
)
from harness.storage.base import (
    CheckpointNotFound,
    StorageManager,
    validate_uuid,
)

__all__ = [
    "CheckpointNotFound",
    "StorageConfig",
    "StorageManager",
    "build_storage",
    "parse_storage_config",
    "validate_uuid",
]

StorageConfig = SharedFSStorage | S3Storage | GCSStorage


def parse_storage_config(raw: Mapping[str, Any]) -> StorageConfig:
    """A ``checkpoint_storage`` mapping (e.g. ``DET_CHECKPOINT_STORAGE`` decoded) as its model."""
    config: StorageConfig = TypeAdapter(CheckpointStorage).validate_python(raw)
    return config


def build_storage(config: StorageConfig | Mapping[str, Any]) -> StorageManager:
    """The manager for a ``checkpoint_storage`` config (a model, or the mapping it came from)."""
    if isinstance(config, Mapping):
        config = parse_storage_config(config)
    if isinstance(config, SharedFSStorage):
        from harness.storage.shared_fs import SharedFSStorageManager

        return SharedFSStorageManager(config)
    if isinstance(config, S3Storage):
        from harness.storage.s3 import S3StorageManager

        return S3StorageManager(config)
    if isinstance(config, GCSStorage):
        from harness.storage.gcs import GCSStorageManager

        return GCSStorageManager(config)
    raise TypeError(f"not a checkpoint storage config: {type(config).__name__}")
