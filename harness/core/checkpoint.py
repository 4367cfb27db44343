"""Saving and loading checkpoints (``core.checkpoint``).

Files go to the experiment's checkpoint storage (``harness.storage``) under a fresh uuid; only
once they are all there does the chief tell the master (``POST /api/v1/checkpoints``), so the
master never hands out a checkpoint that is half written. Each checkpoint also carries its
metadata as ``metadata.json``, so a checkpoint directory explains itself without the master.
"""

from __future__ import annotations

import json
import os
import uuid as uuid_lib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from harness.core.api import TrialAPI
from harness.core.distributed import DistributedContext

METADATA_FILE = "metadata.json"


class Storage(Protocol):
    """The part of ``harness.storage.StorageManager`` the Core API uses."""

    def store_path(self, uuid: str) -> AbstractContextManager[Path]: ...
    def restore_path(self, uuid: str) -> AbstractContextManager[Path]: ...
    def upload(self, src: Path, uuid: str) -> dict[str, int]: ...
    def download(self, uuid: str, dst: Path) -> None: ...


def storage_from_config(config: Mapping[str, Any] | None) -> Storage:
    """The storage manager for ``DET_CHECKPOINT_STORAGE`` (a validated storage config)."""
    if not config:
        raise RuntimeError(
            "no checkpoint storage: DET_CHECKPOINT_STORAGE is unset (the master sets it from the "
            "experiment's checkpoint_storage, else its own)"
        )
    from harness.storage import build_storage

    storage: Storage = build_storage(dict(config))
    return storage


class CheckpointContext:
    """``sources`` maps uuids of checkpoints kept in another storage than the trial's (the warm
    start's) to that storage, so reading them works like reading the trial's own."""

    def __init__(
        self,
        api: TrialAPI,
        dist: DistributedContext,
        storage: Callable[[], Storage],
        sources: Mapping[str, Callable[[], Storage]] | None = None,
    ) -> None:
        self._api = api
        self._dist = dist
        self._storage_factory = storage
        self._storage: Storage | None = None
        self._sources = dict(sources or {})
        self._source_storages: dict[str, Storage] = {}

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = self._storage_factory()
        return self._storage

    def _storage_of(self, uuid: str) -> Storage:
        """The storage holding checkpoint ``uuid``: its source's, else the trial's."""
        factory = self._sources.get(uuid)
        if factory is None:
            return self.storage
        if uuid not in self._source_storages:
            self._source_storages[uuid] = factory()
        return self._source_storages[uuid]

    @contextmanager
    def store_path(self, metadata: Mapping[str, Any]) -> Iterator[tuple[Path, str]]:
        """A local directory to write a checkpoint into, and its uuid; on a clean exit of the
        ``with`` block the files are saved and the checkpoint reported. Chief only.

        ``metadata`` must hold ``steps_completed`` (batches trained so far) and be JSON-able.
        """
        self._require_chief("store_path")
        meta = _check_metadata(metadata)
        uuid = str(uuid_lib.uuid4())
        with self.storage.store_path(uuid) as path:
            directory = Path(path)
            yield directory, uuid
            _write_metadata(directory, meta)
            resources = _local_files(directory)
        self._api.report_checkpoint(uuid, resources, meta)

    def upload(self, src: str | os.PathLike[str], metadata: Mapping[str, Any]) -> str:
        """Save the files under ``src`` as a new checkpoint and report it; returns its uuid.
        Writes ``metadata.json`` into ``src``. Chief only."""
        self._require_chief("upload")
        meta = _check_metadata(metadata)
        directory = Path(src)
        if not directory.is_dir():
            raise NotADirectoryError(f"cannot upload {directory}: not a directory")
        _write_metadata(directory, meta)
        uuid = str(uuid_lib.uuid4())
        resources = self.storage.upload(directory, uuid)
        self._api.report_checkpoint(uuid, dict(resources), meta)
        return uuid

    @contextmanager
    def restore_path(self, uuid: str) -> Iterator[Path]:
        """The files of checkpoint ``uuid`` as a local directory, for reading (any worker)."""
        with self._storage_of(uuid).restore_path(uuid) as path:
            yield Path(path)

    def download(self, uuid: str, dst: str | os.PathLike[str]) -> None:
        """Copy checkpoint ``uuid`` into the directory ``dst`` (created if missing)."""
        target = Path(dst)
        target.mkdir(parents=True, exist_ok=True)
        self._storage_of(uuid).download(uuid, target)

    def get_metadata(self, uuid: str) -> dict[str, Any]:
        """The metadata stored with checkpoint ``uuid`` (``{}`` for one without any)."""
        with self.restore_path(uuid) as path:
            file = path / METADATA_FILE
            if not file.exists():
                return {}
            data: dict[str, Any] = json.loads(file.read_text())
            return data

    def _require_chief(self, what: str) -> None:
        if not self._dist.is_chief:
            raise RuntimeError(
                f"core.checkpoint.{what}() on worker rank {self._dist.rank}: only the chief "
                "(rank 0) saves checkpoints; gather what other workers hold with "
                "core.distributed.gather() first"
            )


def _check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"checkpoint metadata must be a dict, got {type(metadata).__name__}")
    meta = dict(metadata)
    steps = meta.get("steps_completed")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(
            "checkpoint metadata must hold steps_completed, the number of batches trained so "
            f"far (an integer >= 0); got {steps!r}"
        )
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint metadata must be JSON-serializable: {exc}") from None
    return meta


def _write_metadata(directory: Path, metadata: dict[str, Any]) -> None:
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))


def _local_files(root: Path) -> dict[str, int]:
    """Relative ``/``-separated path -> bytes of every file under ``root``."""
    sizes: dict[str, int] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            sizes[path.relative_to(root).as_posix()] = path.stat().st_size
    return dict(sorted(sizes.items()))
