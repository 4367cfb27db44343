"""Flotilla's ``determined`` package: Determined's training-code API over ``harness``.

A Determined user's model code starts with ``import determined as det``. The directory
:data:`IMPORT_PATH` holds a ``determined`` package implementing the part of that API such code
uses (``det.get_cluster_info()``, ``det.core.init()``, ``det.pytorch.PyTorchTrial``, …; the list
is in docs/core-api.md, "Determined code unchanged") as a thin layer over ``harness.core`` and
``harness.pytorch``. What it does not implement raises an error naming the missing API.

The directory is put on the import path of trials only (:func:`enable`, called by
``python -m harness.launch``), never installed as a top-level ``determined``: a user's own
environment may hold Determined's real package (its CLI and SDK), and the two must not clash.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

# The directory holding the ``determined`` package.
IMPORT_PATH = str(Path(__file__).resolve().parent)


def enable(environ: MutableMapping[str, str] | None = None) -> None:
    """Make ``import determined`` find Flotilla's layer in this process (``sys.path``) and in
    the processes it starts (``PYTHONPATH`` in ``environ``, default ``os.environ``), ahead of
    any other ``determined``."""
    env = os.environ if environ is None else environ
    if IMPORT_PATH not in sys.path:
        sys.path.insert(0, IMPORT_PATH)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != IMPORT_PATH]
    env["PYTHONPATH"] = os.pathsep.join([IMPORT_PATH, *parts])
