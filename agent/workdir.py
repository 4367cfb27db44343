"""An allocation's working directory, ``<work_dir>/<allocation_id>``, and the context files
the master sends for it.

The master's ``start_allocation`` carries files as ``relative path -> base64 bytes``. Names
come from a user's context directory, so they are checked before anything is written: no
absolute paths, no ``..``, nothing that resolves outside the directory through a symlink.
File modes are not part of the protocol: files are written with the default mode, so a
script in the context is not executable (run it as ``sh run.sh``, not ``./run.sh``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path

from agent.context_files import ContextError, validate_context

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
