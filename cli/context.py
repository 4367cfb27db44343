"""Pack a context directory (``-c DIR``) into the ``files`` list the master accepts.

The wire shape is Determined's ``v1File`` list, so the master reads what Determined's CLI sends
and ours alike: one entry per directory (``type`` 53, tar's ``'5'``) and regular file (``type``
48, tar's ``'0'``), with a ``/``-separated path relative to the context, base64 ``content``,
``mtime`` (seconds) and the permission bits in ``mode``.

A ``.detignore`` at the top of the context leaves files out, with gitignore's common rules read
through ``fnmatch``: ``#`` comments and blank lines are skipped, ``!pat`` re-includes, ``pat/``
matches directories only, a pattern with a ``/`` inside is anchored at the context's top
(``/build`` or ``data/raw``), any other pattern matches a name at any depth (``*.ckpt``). The
last matching line wins; an ignored directory is not entered.

The master refuses contexts over 96 MiB of base64 (``MAX_CONTEXT_BYTES``), as Determined's does;
we refuse them before reading or uploading anything, naming the biggest files, because "too
big" alone leaves the user to hunt for the culprit.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import pathlib
import stat
from dataclasses import dataclass
from typing import Any

from cli.errors import CliError

MAX_CONTEXT_BYTES = 96 * 1024 * 1024
REGULAR_FILE_TYPE = 48
DIRECTORY_TYPE = 53
IGNORE_FILE = ".detignore"
# How many of the biggest files an "over the limit" message names.
BIGGEST_SHOWN = 5


@dataclass(frozen=True)
class _Rule:
    pattern: str
    negate: bool
    dir_only: bool
    anchored: bool

    def matches(self, rel_path: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.anchored:
            return fnmatch.fnmatchcase(rel_path, self.pattern)
        return fnmatch.fnmatchcase(rel_path.rsplit("/", 1)[-1], self.pattern)


def parse_ignore(text: str) -> list[_Rule]:
    """The rules of a ``.detignore`` file (see the module docstring for what is supported)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        if line:
            rules.append(_Rule(line, negate, dir_only, anchored))
    return rules


def is_ignored(rules: list[_Rule], rel_path: str, is_dir: bool) -> bool:
    ignored = False
    for rule in rules:
        if rule.matches(rel_path, is_dir):
            ignored = not rule.negate
    return ignored


def _encoded_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _walk(root: pathlib.Path, rules: list[_Rule]) -> tuple[list[str], list[tuple[str, int]]]:
    """Kept directories and (file, size) pairs, relative to ``root``, in a stable order."""
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    for current, dirnames, filenames in os.walk(root):
        base = pathlib.Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        kept_dirs = []
        for name in sorted(dirnames):
            rel = prefix + name
            if is_ignored(rules, rel, True) or (pathlib.Path(current) / name).is_symlink():
                continue
            kept_dirs.append(name)
            dirs.append(rel)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = prefix + name
            if is_ignored(rules, rel, False):
                continue
            try:
                st = (pathlib.Path(current) / name).stat()
            except FileNotFoundError:  # a dangling symlink: nothing to send
                continue
            if stat.S_ISREG(st.st_mode):
                files.append((rel, st.st_size))
    return dirs, files


def pack_context(directory: str | os.PathLike[str], limit: int | None = None) -> list[Any]:
    """The ``files`` list for ``directory``; raises CliError if it is not one or is too big.

    ``limit`` defaults to :data:`MAX_CONTEXT_BYTES` (read at call time, so tests can lower it).
    """
    limit = MAX_CONTEXT_BYTES if limit is None else limit
    root = pathlib.Path(directory).expanduser()
    if not root.is_dir():
        raise CliError(f"context {str(directory)!r} is not a directory; -c takes a directory")
    ignore_file = root / IGNORE_FILE
    rules = parse_ignore(ignore_file.read_text()) if ignore_file.is_file() else []
    dirs, files = _walk(root, rules)

    total = sum(_encoded_size(size) for _, size in files)
    if total > limit:
        biggest = sorted(files, key=lambda item: item[1], reverse=True)[:BIGGEST_SHOWN]
        named = ", ".join(f"{path} ({_mib(size)})" for path, size in biggest)
        raise CliError(
            f"context {str(directory)!r} is {_mib(total)} encoded, over the limit of "
            f"{_mib(limit)}; biggest files: {named}; leave files out with a {IGNORE_FILE}"
        )

    entries: list[Any] = []
    for rel in dirs:
        st = (root / rel).stat()
        entries.append(_entry(rel, DIRECTORY_TYPE, b"", st))
    for rel, _ in files:
        path = root / rel
        try:
            content = path.read_bytes()
        except OSError as e:
            raise CliError(f"cannot read context file {rel!r}: {e.strerror or e}") from None
        entries.append(_entry(rel, REGULAR_FILE_TYPE, content, path.stat()))
    return entries


def _entry(rel: str, kind: int, content: bytes, st: os.stat_result) -> dict[str, Any]:
    return {
        "path": rel,
        "type": kind,
        "content": base64.b64encode(content).decode("ascii"),
        "mtime": int(st.st_mtime),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": 0,
        "gid": 0,
    }
