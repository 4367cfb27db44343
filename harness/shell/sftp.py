"""The ``sftp`` subsystem on the task's own filesystem, which is what makes ``scp`` work.

Since OpenSSH 9.0 ``scp`` speaks SFTP by default, so this one subsystem serves ``sftp``, ``scp``
and editors that browse remote files. Paths are the task's: absolute paths are the filesystem's,
relative ones start at the task's working directory (what a client sees as its "home", since
``sftp`` canonicalizes ``.`` first). Every call runs with the task's own permissions; failures
are reported with the SFTP status matching the ``errno``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import IO, Any, TypeVar

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_OK
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_handle import SFTPHandle
from paramiko.sftp_server import SFTPServer
from paramiko.transport import Transport

T = TypeVar("T")


def _error_status(error: OSError) -> int:
    return SFTPServer.convert_errno(error.errno) if error.errno else SFTP_FAILURE


def _status(call: Callable[[], T]) -> T | int:
    """``call()``, or the SFTP status for the OSError it raised."""
    try:
        return call()
    except OSError as e:
        return _error_status(e)


def _ok(action: Callable[..., object], *args: Any) -> int:
    """``SFTP_OK`` once ``action(*args)`` is done, or the status for the OSError it raised."""
    try:
        action(*args)
    except OSError as e:
        return _error_status(e)
    return SFTP_OK


def apply_attributes(path: str, attr: SFTPAttributes) -> None:
    """Apply the attributes present in ``attr`` to ``path``.

    Paramiko's own ``SFTPServer.set_file_attr`` empties a file before setting its size, so a
    ``setstat`` with a size (resuming an upload, ``truncate``) would destroy its contents.
    """
    if attr.st_mode is not None:
        os.chmod(path, attr.st_mode & 0o7777)
    if attr.st_uid is not None and attr.st_gid is not None:
        os.chown(path, attr.st_uid, attr.st_gid)
    if attr.st_atime is not None and attr.st_mtime is not None:
        os.utime(path, (attr.st_atime, attr.st_mtime))
    if attr.st_size is not None:
        os.truncate(path, attr.st_size)


def _file_mode(flags: int) -> str:
    """The ``open()`` mode matching ``os.open`` flags, for wrapping the descriptor."""
    append = flags & os.O_APPEND
    if flags & os.O_WRONLY:
        return "ab" if append else "wb"
    if flags & os.O_RDWR:
        return "a+b" if append else "r+b"
    return "rb"


class LocalHandle(SFTPHandle):
    """An open file; paramiko's base class does the reads and writes on ``readfile`` and
    ``writefile``."""

    def __init__(self, flags: int, path: str, file: IO[bytes]) -> None:
        super().__init__(flags)
        self.filename = path
        self.readfile = file
        self.writefile = file

    def stat(self) -> SFTPAttributes | int:
        return _status(lambda: SFTPAttributes.from_stat(os.fstat(self.readfile.fileno())))

    def chattr(self, attr: SFTPAttributes) -> int:
        self.writefile.flush()
        return _ok(apply_attributes, self.filename, attr)


class LocalSFTPServer(paramiko.SFTPServerInterface):
    """SFTP requests carried out on the local filesystem (see the module docstring)."""

    def __init__(self, server: paramiko.ServerInterface, *args: Any, cwd: str, **kwargs: Any):
        super().__init__(server, *args, **kwargs)
        self._cwd = cwd

    def _path(self, path: str) -> str:
        # The kernel resolves ".." and symbolic links; only canonicalize() flattens them.
        return os.path.join(self._cwd, path) if path else self._cwd

    def open(self, path: str, flags: int, attr: SFTPAttributes) -> SFTPHandle | int:
        real = self._path(path)
        mode = attr.st_mode & 0o7777 if attr is not None and attr.st_mode is not None else 0o666

        def opened() -> SFTPHandle:
            fd = os.open(real, flags | os.O_CLOEXEC, mode)
            try:
                return LocalHandle(flags, real, os.fdopen(fd, _file_mode(flags)))
            except BaseException:
                os.close(fd)
                raise

        return _status(opened)

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        real = self._path(path)

        def listing() -> list[SFTPAttributes]:
            entries = []
            for name in os.listdir(real):
                try:
                    # lstat, as OpenSSH's sftp-server: a symbolic link shows as a link.
                    entries.append(
                        SFTPAttributes.from_stat(os.lstat(os.path.join(real, name)), name)
                    )
                except OSError:
                    continue  # removed while we listed
            return entries

        return _status(listing)

    def stat(self, path: str) -> SFTPAttributes | int:
        return _status(lambda: SFTPAttributes.from_stat(os.stat(self._path(path))))

    def lstat(self, path: str) -> SFTPAttributes | int:
        return _status(lambda: SFTPAttributes.from_stat(os.lstat(self._path(path))))

    def remove(self, path: str) -> int:
        return _ok(os.remove, self._path(path))

    def rename(self, oldpath: str, newpath: str) -> int:
        # SFTP v3's rename must not replace an existing file (posix_rename does).
        old, new = self._path(oldpath), self._path(newpath)
        if os.path.lexists(new):
            return SFTP_FAILURE
        return _ok(os.rename, old, new)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return _ok(os.rename, self._path(oldpath), self._path(newpath))

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        mode = attr.st_mode & 0o7777 if attr is not None and attr.st_mode is not None else 0o777
        return _ok(os.mkdir, self._path(path), mode)

    def rmdir(self, path: str) -> int:
        return _ok(os.rmdir, self._path(path))

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        return _ok(apply_attributes, self._path(path), attr)

    def canonicalize(self, path: str) -> str:
        return os.path.realpath(self._path(path))

    def readlink(self, path: str) -> str | int:
        return _status(lambda: os.readlink(self._path(path)))

    def symlink(self, target_path: str, path: str) -> int:
        # The target is stored as given: a relative target stays relative to the link.
        return _ok(os.symlink, target_path, self._path(path))


class SFTPSubsystem(SFTPServer):
    """Paramiko's SFTP server, plus an exit status when the session ends.

    sshd reports ``sftp-server``'s exit status; without one ``ssh`` exits 255 and ``scp`` (in
    SFTP mode) then fails a copy that succeeded.
    """

    def start_subsystem(self, name: str, transport: Transport, channel: paramiko.Channel) -> None:
        super().start_subsystem(name, transport, channel)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.send_exit_status(0)
