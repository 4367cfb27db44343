"""Progress bars for long operations: on stderr, and only when stderr is a terminal.

Drawn with ``rich``: a transfer shows its size, rate and time left (checkpoint downloads, context
uploads); a wait shows what it waits for, a bar when the fraction done is known (``det experiment
wait``) and the time elapsed (cluster-up's first start). When stderr is not a terminal — a pipe,
a file, CI, the demo's log — nothing is drawn and no escape code is written: the commands print
their usual lines and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from harness.client import MasterClient


class Bar(Protocol):
    """What a command tells its bar; every call is a no-op when no bar is drawn."""

    def advance(self, amount: float) -> None: ...

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None: ...


class _NoBar:
    def advance(self, amount: float) -> None:
        pass

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        pass


class _RichBar:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float) -> None:
        self._progress.advance(self._task, amount)

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        self._progress.update(self._task, completed=completed, total=total, description=description)


def drawn(stream: TextIO | None = None) -> bool:
    """Whether bars are drawn: only on a terminal."""
    target = stream or sys.stderr
    try:
        return target.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


@contextlib.contextmanager
def _bar(description: str, total: float | None, *columns: str | ProgressColumn) -> Iterator[Bar]:
    if not drawn():
        yield _NoBar()
        return
    console = Console(file=sys.stderr)
    with Progress(*columns, console=console, transient=True) as progress:
        yield _RichBar(progress, progress.add_task(description, total=total))


def transfer(description: str, total: int | None) -> contextlib.AbstractContextManager[Bar]:
    """A bar over bytes: done and total sizes, rate, time left (``total`` None: unknown)."""
    return _bar(
        description,
        total,
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )


def waiting(description: str, total: float | None = None) -> contextlib.AbstractContextManager[Bar]:
    """A wait: a spinner, the description, a bar when ``total`` is known, the time elapsed."""
    return _bar(
        description,
        total,
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%" if total else ""),
        TimeElapsedColumn(),
    )


def post(client: MasterClient, path: str, body: dict[str, Any], what: str) -> Any:
    """POST ``body``; on a terminal with a transfer bar of the bytes sent (a context upload)."""
    if not drawn():
        return client.post(path, body)
    size = len(json.dumps(body).encode())
    with transfer(what, size) as bar:
        return client.post(path, body, on_sent=bar.advance)
