"""What every checkpoint storage backend shares: the interface, its errors, uuid and path checks.

The master, the harness and the CLI only ever talk to a :class:`StorageManager`, so a checkpoint
written by a trial on an agent can be streamed, listed and garbage-collected by the master
without either side knowing which backend holds it. Object stores (S3, GCS) have no directories
and no atomic multi-file writes; :class:`ObjectStorage` turns a handful of per-object primitives
into the whole interface so both behave the same.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path, PurePosixPath
from typing import Protocol


class CheckpointNotFound(LookupError):
    """No checkpoint ``uuid`` at ``where`` (a directory or an ``s3://``/``gs://`` prefix)."""

    def __init__(self, uuid: str, where: str) -> None:
        super().__init__(f"checkpoint {uuid} not found at {where}")
        self.uuid = uuid
        self.where = where


class StorageManager(Protocol):
    """Where checkpoints live; see docs/design/experiments.md ("Checkpoint storage")."""

    def store_path(self, uuid: str) -> AbstractContextManager[Path]:
        """A local directory to write the checkpoint into; saved when the block exits cleanly,
        discarded if it raises."""
        ...

    def restore_path(self, uuid: str) -> AbstractContextManager[Path]:
        """The checkpoint's files as a local directory, for reading only."""
        ...

    def upload(self, src: Path, uuid: str) -> dict[str, int]:
        """Save the files under ``src`` as checkpoint ``uuid``; returns relative path -> bytes."""
        ...

    def download(self, uuid: str, dst: Path) -> None:
        """Copy checkpoint ``uuid`` into the directory ``dst``."""
        ...

    def delete(self, uuid: str) -> None:
        """Remove checkpoint ``uuid``; deleting one that is not there is not an error."""
        ...

    def files(self, uuid: str) -> dict[str, int]:
        """Relative path (``/``-separated) -> size in bytes of each file of checkpoint ``uuid``."""
        ...


def validate_uuid(uuid: str) -> str:
    """``uuid`` if it is safe as one path component / key segment, else ValueError.

    Checkpoint ids come over the network (REST, ``DET_LATEST_CHECKPOINT``); one like ``../x``
    would make ``delete`` remove something outside the storage root. A leading dot is refused
    too: shared_fs keeps half-written checkpoints in dot-directories, which must never be
    mistaken for checkpoints.
    """
    if not isinstance(uuid, str) or not uuid:
        raise ValueError(f"invalid checkpoint uuid {uuid!r}: must be a non-empty string")
    if "/" in uuid or "\\" in uuid or "\x00" in uuid or ".." in uuid or uuid.startswith("."):
        raise ValueError(
            f"invalid checkpoint uuid {uuid!r}: no path separators, '..' or leading '.'"
        )
    return uuid


def safe_relative(name: str) -> PurePosixPath:
    """An object key's part below the checkpoint prefix as a relative path that stays inside
    the download directory (keys are written by whoever can write the bucket)."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"refusing checkpoint file name {name!r}: not a plain relative path")
    return path


def local_files(root: Path) -> dict[str, int]:
    """Relative ``/``-separated path -> size of every file under ``root`` (symlinks followed
    for files, not for directories), sorted by path."""
    sizes: dict[str, int] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath, filename)
            sizes[path.relative_to(root).as_posix()] = path.stat().st_size
    return dict(sorted(sizes.items()))


def require_directory(src: Path) -> None:
    """``os.walk`` of a missing directory yields nothing, which would store an empty checkpoint;
    fail loudly instead."""
    if not src.is_dir():
        raise NotADirectoryError(f"cannot upload {src}: not a directory")


class ObjectStorage(ABC):
    """The interface on top of four object primitives (and two batch hooks); checkpoint
    ``uuid`` is every object under ``<prefix>/<uuid>/``.

    Objects are uploaded one by one, so readers could see a partial checkpoint while an upload
    is running; that is harmless because the master only learns of a checkpoint once its upload
    has finished (the harness reports it afterwards).
    """

    scheme: str = ""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    # ---- primitives each backend provides ----------------------------------------------------

    @abstractmethod
    def _put_file(self, path: Path, key: str) -> None: ...

    @abstractmethod
    def _get_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object whose key starts with ``prefix``, all pages."""

    @abstractmethod
    def _delete_keys(self, keys: list[str]) -> None:
        """Delete these objects; ones already gone are not an error."""

    def _put_files(self, pairs: list[tuple[Path, str]]) -> None:
        """Upload each ``(local path, key)``; a backend with a parallel transfer manager
        overrides this (boto3 already parallelises within a file, so S3 keeps the loop)."""
        for path, key in pairs:
            self._put_file(path, key)

    def _get_files(self, pairs: list[tuple[str, Path]]) -> None:
        """Download each ``(key, local path)``; parent directories exist already."""
        for key, path in pairs:
            self._get_file(key, path)

    # ---- the interface ----------------------------------------------------------------------

    def key_prefix(self, uuid: str) -> str:
        validate_uuid(uuid)
        return f"{self.prefix}/{uuid}/" if self.prefix else f"{uuid}/"

    def location(self, uuid: str) -> str:
        """``s3://bucket/prefix/<uuid>/``: for messages and the UI."""
        return f"{self.scheme}://{self.bucket}/{self.key_prefix(uuid)}"

    def _objects(self, uuid: str) -> dict[str, tuple[str, int]]:
        """Relative path -> (key, size); keys ending in ``/`` are directory markers that other
        tools (the console, Determined) create, not files."""
        prefix = self.key_prefix(uuid)
        return {
            key[len(prefix) :]: (key, size)
            for key, size in self._list(prefix)
            if not key.endswith("/")
        }

    @contextmanager
    def store_path(self, uuid: str) -> Iterator[Path]:
        validate_uuid(uuid)
        with tempfile.TemporaryDirectory(prefix=f"checkpoint-{uuid}-") as tmp:
            yield Path(tmp)
            self.upload(Path(tmp), uuid)  # not reached if the block raised

    @contextmanager
    def restore_path(self, uuid: str) -> Iterator[Path]:
        validate_uuid(uuid)
        with tempfile.TemporaryDirectory(prefix=f"checkpoint-{uuid}-") as tmp:
            self.download(uuid, Path(tmp))
            yield Path(tmp)

    def upload(self, src: Path, uuid: str) -> dict[str, int]:
        """Replaces whatever ``uuid`` held before: objects the new tree does not have are
        deleted, so a retried upload leaves no leftovers from an earlier attempt."""
        prefix = self.key_prefix(uuid)
        require_directory(src)
        sizes = local_files(src)
        stale = [key for rel, (key, _size) in self._objects(uuid).items() if rel not in sizes]
        if stale:
            self._delete_keys(stale)
        self._put_files([(src / rel, prefix + rel) for rel in sizes])
        return sizes

    def download(self, uuid: str, dst: Path) -> None:
        objects = self._objects(uuid)
        if not objects:
            raise CheckpointNotFound(uuid, self.location(uuid))
        pairs = []
        for rel, (key, _size) in objects.items():
            target = dst / safe_relative(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            pairs.append((key, target))
        self._get_files(pairs)

    def delete(self, uuid: str) -> None:
        keys = [key for key, _size in self._list(self.key_prefix(uuid))]
        if keys:
            self._delete_keys(keys)

    def files(self, uuid: str) -> dict[str, int]:
        objects = self._objects(uuid)
        if not objects:
            raise CheckpointNotFound(uuid, self.location(uuid))
        return {rel: size for rel, (_key, size) in sorted(objects.items())}
