"""The rules a context directory's file list must follow, checked the same way by the master
(when a command, service or experiment is created) and the agent (before it writes anything).

A context arrives as ``relative path -> base64 content`` (regular files only; directories are
implied by the paths). The names come from a user's machine, so they are checked before
anything is stored or scheduled; the limits are Linux's, where every task's files land:

- a path is relative, non-empty, not ``.``, has no ``..`` component and no NUL byte;
- each component is at most :data:`NAME_MAX` bytes and the whole path at most :data:`PATH_MAX`
  bytes, in UTF-8 (which it must be);
- no two paths name the same file once spelled canonically (``a//b``, ``./a/b`` and ``a/b``
  are the same), and no file is also a directory of another path (``f`` beside ``f/child``);
- the content is valid base64.

This module is pure: no file system access.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import PurePosixPath

# Linux's limits (limits.h): bytes in one file name, bytes in a path.
NAME_MAX = 255
PATH_MAX = 4096


class ContextError(ValueError):
    """A context file list the cluster cannot write; ``path`` is the offending entry as sent."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"context file {path!r}: {reason}")
        self.path = path
        self.reason = reason


def canonical_path(name: str) -> PurePosixPath:
    """``name`` as the relative path it will be written to, or :class:`ContextError`."""
    if "\x00" in name:
        raise ContextError(name, "contains a NUL byte")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ContextError(name, "is not valid Unicode text") from None
    if len(encoded) > PATH_MAX:
        raise ContextError(name, f"is {len(encoded)} bytes long; the limit is {PATH_MAX}")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ContextError(name, "is absolute; paths must be relative to the context directory")
    if ".." in path.parts:
        raise ContextError(name, "contains '..'; paths must stay inside the context directory")
    if not path.parts:
        raise ContextError(name, "names no file (empty or '.')")
    for part in path.parts:
        size = len(part.encode("utf-8"))
        if size > NAME_MAX:
            raise ContextError(name, f"has a component of {size} bytes; the limit is {NAME_MAX}")
    return path


def check_content(name: str, content: str) -> None:
    """:class:`ContextError` unless ``content`` is valid base64."""
    try:
        base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ContextError(name, f"content is not valid base64 ({exc})") from None


def validate_context(files: Mapping[str, str]) -> dict[PurePosixPath, str]:
    """Every rule of the module docstring over ``files`` (path -> base64), in order; the first
    broken one raises :class:`ContextError`. Returns the files by canonical path."""
    canonical: dict[PurePosixPath, str] = {}
    spelled: dict[PurePosixPath, str] = {}
    for name, content in files.items():
        path = canonical_path(name)
        if path in canonical:
            raise ContextError(name, f"names the same file as {spelled[path]!r}")
        check_content(name, content)
        canonical[path] = content
        spelled[path] = name
    for path, name in spelled.items():
        for parent in path.parents:
            if parent in canonical:
                raise ContextError(
                    spelled[parent], f"is a file, but {name!r} needs it to be a directory"
                )
    return canonical
