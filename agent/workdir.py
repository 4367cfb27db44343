"""An allocation's working directory, ``<work_dir>/<allocation_id>``, and the context files
the master sends for it.

The master's ``start_allocation`` carries files as ``relative path -> base64 bytes``. Names
come from a user's context directory, so they are checked before anything is written: no
absolute paths, no ``..``, nothing that resolves outside the directory through a symlink.
File modes are not part of the protocol: files are written with the default mode, so a
script in the context is not executable (run it as ``sh run.sh``, not ``./run.sh``).

Determined's ``bind_mounts`` become symbolic links in the directory (there is no container to
mount into): the task reaches the host path with its own permissions, nothing more.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from agent.context_files import ContextError, validate_context
from agent.protocol import BindMount

ALLOCATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


class StartError(Exception):
    """The allocation cannot be started; the message says why, for the user."""


def prepare_directory(work_dir: Path, allocation_id: str, files: Mapping[str, str]) -> Path:
    """Create ``<work_dir>/<allocation_id>`` and write the base64-encoded ``files`` into it.

    Every path is checked first, by the same rules the master applied when the context arrived
    (:mod:`agent.context_files`), so a bad context writes nothing.
    """
    if not ALLOCATION_ID.match(allocation_id):
        raise StartError(f"unsafe allocation id {allocation_id!r}")
    directory = work_dir / allocation_id
    try:
        checked = validate_context(files)
    except ContextError as e:
        raise StartError(str(e)) from None
    decoded = [(directory / path, base64.b64decode(content)) for path, content in checked.items()]
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    for target, data in decoded:
        if not target.resolve().is_relative_to(root):  # through a symlink already there
            raise StartError(f"context file {str(target)!r} would land outside {directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory


def link_bind_mounts(directory: Path, mounts: Iterable[BindMount], agent_id: str) -> list[str]:
    """Link each mount's ``host_path`` at ``container_path`` inside ``directory`` (an absolute
    ``container_path`` is taken below it: ``/data`` → ``<directory>/data``), as Determined's
    ``bind_mounts`` would mount it in a container. Returns one line per mount that was not
    linked (host path missing on this agent, a path leaving the directory, a name already
    taken), for the task's log; the task starts either way."""
    problems = []
    root = directory.resolve()
    for mount in mounts:
        inside = mount.container_path.lstrip("/")
        target = directory / inside
        host = Path(mount.host_path)
        why = None
        if not inside or ".." in Path(inside).parts:
            why = "container_path must name a place inside the task's directory (no '..')"
        elif not host.is_absolute() or not host.exists():
            why = f"host_path {mount.host_path} does not exist on agent {agent_id}"
        elif target.exists() or target.is_symlink():
            why = f"{inside} already exists in the task's directory (a context file?)"
        elif not target.parent.resolve().is_relative_to(root):
            why = f"{inside} would land outside the task's directory"
        if why:
            problems.append(
                f"bind_mounts: not linking {mount.host_path} at {mount.container_path}: {why}"
            )
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(host)
    return problems
