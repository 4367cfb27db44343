"""Pack a context directory (``-c DIR``) into the ``files`` list the master accepts.

The wire shape is Determined's ``v1File`` list, so the master reads what Determined's CLI sends
and ours alike: one entry per directory (``type`` 53, tar's ``'5'``) and regular file (``type``
48, tar's ``'0'``), with a ``/``-separated path relative to the context, base64 ``content``,
``mtime`` (seconds) and the permission bits in ``mode``.

What is left out follows Determined exactly: its default ignores (:data:`DEFAULT_DETIGNORE`:
``.git/``, ``__pycache__/``, byte-compiled files, IDE folders, Terraform state), then the lines of
a ``.detignore`` at the top of the context, matched with git's own rules through ``pathspec``'s
``GitIgnoreSpec`` (``*`` stops at ``/``, ``**/x`` matches a top-level ``x``, ``a/**/b`` matches
``a/b``, ``!pat`` re-includes, the last matching line wins). An ignored directory is not
entered, and the ``.detignore`` file itself is not sent.

While packing, the CLI prints Determined's "Preparing files (DIR) to send to master... 8.6KB and
7 files" line (entries counted as Determined counts them, directories included). On a terminal
the line is redrawn as files are added; anywhere else it is printed once, with no carriage
returns.

The master refuses contexts over 96 MiB of base64 (``MAX_CONTEXT_BYTES``), as Determined's does;
we refuse them before reading or uploading anything, naming the biggest files, because "too
big" alone leaves the user to hunt for the culprit.
"""

from __future__ import annotations

import base64
import os
import pathlib
import stat
import sys
from typing import Any, TextIO

import pathspec

from cli.errors import CliError

MAX_CONTEXT_BYTES = 96 * 1024 * 1024
REGULAR_FILE_TYPE = 48
DIRECTORY_TYPE = 53
IGNORE_FILE = ".detignore"
# How many of the biggest files an "over the limit" message names.
BIGGEST_SHOWN = 5


# Determined's DEFAULT_DETIGNORE (determined/common/constants.py), in its order.
DEFAULT_DETIGNORE = (
    "__pycache__/",
    "*.py[co]",
    "*$py.class",
    "terraform",
    "terraform_data",
    "terraform.tfstate*",
    "terraform.tfvars*",
    ".terraform*",
    ".git/",
    ".vscode/",
    ".idea/",
    ".mypy_cache/",
    "/shared_fs",
)


def ignore_spec(detignore_text: str = "") -> pathspec.GitIgnoreSpec:
    """Determined's default ignores followed by the lines of a ``.detignore``."""
    return pathspec.GitIgnoreSpec.from_lines([*DEFAULT_DETIGNORE, *detignore_text.splitlines()])


def is_ignored(spec: pathspec.GitIgnoreSpec, rel_path: str, is_dir: bool) -> bool:
    """Whether ``rel_path`` (``/``-separated, relative to the context) is left out."""
    return spec.match_file(rel_path + "/" if is_dir else rel_path)


def sizeof_fmt(size: float) -> str:
    """``8806`` → ``8.6KB``: Determined's ``util.sizeof_fmt``."""
    for unit in ("", "K", "M", "G", "T", "P", "E", "Z"):
        if abs(size) < 1024.0:
            return f"{size:3.1f}{unit}B"
        size /= 1024.0
    return f"{size:.1f}YB"


def _encoded_size(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _walk(
    root: pathlib.Path, spec: pathspec.GitIgnoreSpec
) -> tuple[list[str], list[tuple[str, int]]]:
    """Kept directories and (file, size) pairs, relative to ``root``, in a stable order."""
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    for current, dirnames, filenames in os.walk(root):
        base = pathlib.Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        kept_dirs = []
        for name in sorted(dirnames):
            rel = prefix + name
            if is_ignored(spec, rel, True) or (pathlib.Path(current) / name).is_symlink():
                continue
            kept_dirs.append(name)
            dirs.append(rel)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = prefix + name
            if rel == IGNORE_FILE or is_ignored(spec, rel, False):
                continue
            try:
                st = (pathlib.Path(current) / name).stat()
            except FileNotFoundError:  # a dangling symlink: nothing to send
                continue
            if stat.S_ISREG(st.st_mode):
                files.append((rel, st.st_size))
    return dirs, files


def pack_context(
    directory: str | os.PathLike[str],
    limit: int | None = None,
    *,
    out: TextIO | None = None,
) -> list[Any]:
    """The ``files`` list for ``directory``; raises CliError if it is not one or is too big.

    ``limit`` defaults to :data:`MAX_CONTEXT_BYTES` (read at call time, so tests can lower it).
    The "Preparing files" line goes to ``out`` (stdout by default, as Determined prints it).
    """
    limit = MAX_CONTEXT_BYTES if limit is None else limit
    root = pathlib.Path(directory).expanduser()
    if not root.is_dir():
        raise CliError(f"context {str(directory)!r} is not a directory; -c takes a directory")
    ignore_file = root / IGNORE_FILE
    try:
        detignore = ignore_file.read_text() if ignore_file.is_file() else ""
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read {ignore_file}: {e}") from None
    dirs, files = _walk(root, spec=ignore_spec(detignore))

    total = sum(_encoded_size(size) for _, size in files)
    if total > limit:
        biggest = sorted(files, key=lambda item: item[1], reverse=True)[:BIGGEST_SHOWN]
        named = ", ".join(f"{path} ({_mib(size)})" for path, size in biggest)
        raise CliError(
            f"context {str(directory)!r} is {_mib(total)} encoded, over the limit of "
            f"{_mib(limit)}; biggest files: {named}; leave files out with a {IGNORE_FILE}"
        )

    stream = out or sys.stdout
    redraw = stream.isatty()
    message = ""

    def show(size: int, count: int, *, final: bool = False) -> None:
        nonlocal message
        if not (redraw or final):
            return
        text = (
            f"Preparing files ({directory}) to send to master... "
            f"{sizeof_fmt(size)} and {count} files"
        )
        if redraw:
            stream.write("\r" + text.ljust(len(message)) + ("\n" if final else ""))
        else:
            stream.write(text + "\n")
        stream.flush()
        message = text

    entries: list[Any] = []
    sent = 0
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
        sent += len(content)
        show(sent, len(entries))
    show(sent, len(entries), final=True)
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
