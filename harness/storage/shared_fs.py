"""Checkpoints in a directory every agent and the master mount at the same path.

``<host_path>/<storage_path>/<uuid>/`` is a checkpoint. Writers fill a hidden sibling
(``.<uuid>.partial-…``) and rename it into place, and deleters rename it away before removing
it, so a reader (the master streaming a download, a trial restoring) sees a whole checkpoint
or none: a trial killed mid-save leaves only a dot-directory behind, never a torn checkpoint.

Under per-task uids (agent ``isolation: uid``) the agent makes the storage directory writable by
every task uid with the sticky bit, like ``/tmp`` (see :func:`agent.isolation.prepare_shared`);
a checkpoint directory is 0755 and owned by the uid that wrote it, so a restarted trial (a new
uid) and the master (root) read it, and only its writer and root may remove or replace it.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.experiment_config import SharedFSStorage
from harness.storage.base import (
    CheckpointNotFound,
    local_files,
    require_directory,
    validate_uuid,
)

CHECKPOINT_DIR_MODE = 0o755  # readable by a restarted trial's new uid and by the master


def storage_root(host_path: str, storage_path: str | None) -> Path:
    """``host_path`` joined with ``storage_path``, which must stay inside it (as in Determined,
    an absolute ``storage_path`` is allowed if it lies under ``host_path``)."""
    host = Path(os.path.normpath(host_path))
    if not host.is_absolute():
        raise ValueError(
            f"checkpoint_storage.host_path {host_path!r} must be an absolute path: the master "
            "and every agent resolve it, each from its own working directory"
        )
    if not storage_path:
        return host
    root = Path(os.path.normpath(host / storage_path))
    if root != host and host not in root.parents:
        raise ValueError(
            f"checkpoint_storage.storage_path {storage_path!r} must be a subdirectory of "
            f"host_path {host_path!r}"
        )
    return root


class SharedFSStorageManager:
    """The :class:`~harness.storage.StorageManager` for ``type: shared_fs``."""

    def __init__(self, config: SharedFSStorage) -> None:
        self.host_path = Path(os.path.normpath(config.host_path))
        self.root = storage_root(config.host_path, config.storage_path)

    def location(self, uuid: str) -> str:
        return str(self._dir(uuid))

    def _dir(self, uuid: str) -> Path:
        return self.root / validate_uuid(uuid)

    def _existing(self, uuid: str) -> Path:
        path = self._dir(uuid)
        if not path.is_dir():
            raise CheckpointNotFound(uuid, str(path))
        return path

    def _ensure_root(self) -> None:
        """Create ``storage_path`` but never ``host_path`` itself: a missing host_path usually
        means the shared file system is not mounted, and writing to the local disk instead would
        lose the checkpoint as soon as the trial moves to another agent."""
        if not self.host_path.is_dir():
            raise FileNotFoundError(
                f"checkpoint_storage.host_path {self.host_path} does not exist or is not a "
                "directory: is the shared file system mounted here?"
            )
        self.root.mkdir(parents=True, exist_ok=True)

    def _sibling(self, uuid: str, kind: str) -> Path:
        return self.root / f".{uuid}.{kind}-{secrets.token_hex(4)}"

    @contextmanager
    def store_path(self, uuid: str) -> Iterator[Path]:
        final = self._dir(uuid)
        self._ensure_root()
        partial = self._sibling(uuid, "partial")
        partial.mkdir()  # not mkdtemp: its 0700 mode would hide the checkpoint from other users
        partial.chmod(CHECKPOINT_DIR_MODE)  # whatever the task's umask
        try:
            yield partial
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        self._publish(partial, final)

    def _publish(self, partial: Path, final: Path) -> None:
        """Rename ``partial`` to ``final`` atomically. Replacing an existing checkpoint (a retried
        save under the same uuid) moves the old one aside first, so readers briefly see no
        checkpoint but never a mix of both."""
        try:
            os.rename(partial, final)  # replaces an empty directory, fails on a non-empty one
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                shutil.rmtree(partial, ignore_errors=True)
                raise
        old = self._sibling(final.name, "replaced")
        os.rename(final, old)
        os.rename(partial, final)
        shutil.rmtree(old, ignore_errors=True)

    @contextmanager
    def restore_path(self, uuid: str) -> Iterator[Path]:
        """The checkpoint directory itself (no copy): read from it, never write to it."""
        yield self._existing(uuid)

    def upload(self, src: Path, uuid: str) -> dict[str, int]:
        require_directory(src)
        with self.store_path(uuid) as partial:
            shutil.copytree(src, partial, dirs_exist_ok=True)
            sizes = local_files(partial)
        return sizes

    def download(self, uuid: str, dst: Path) -> None:
        shutil.copytree(self._existing(uuid), dst, dirs_exist_ok=True)

    def delete(self, uuid: str) -> None:
        path = self._dir(uuid)
        doomed = self._sibling(uuid, "deleting")
        try:
            os.rename(path, doomed)  # gone for readers at once, even if removal takes long
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def files(self, uuid: str) -> dict[str, int]:
        return local_files(self._existing(uuid))
