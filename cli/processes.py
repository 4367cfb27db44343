"""Background processes that outlive the ``det`` that started them, and stopping exactly those.

Each process is started as the leader of a new session, so its process group holds exactly what
it spawned and one ``killpg`` reaches all of it. A :class:`ProcessRecord` keeps the kernel's start
time next to the pid (``psutil``'s ``create_time``), and signals are sent only while that pair
still matches, so a pid the kernel has recycled for someone else's process is never touched.
A zombie (a child of this very process that has exited) counts as stopped, and is reaped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

POLL_SECONDS = 0.05
KILL_WAIT_SECONDS = 5.0


def _proc_start_time(pid: int) -> str | None:
    """When ``pid`` started (seconds since the epoch, as text), which tells a recycled pid
    apart; None if there is no such process."""
    try:
        return repr(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class ProcessRecord:
    """One process cluster-up started, as a session (and process group) leader."""

    name: str
    pid: int
    log: str
    start_time: str | None = None

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        if _is_zombie(self.pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            return False
        return self.start_time is None or _proc_start_time(self.pid) == self.start_time

    def signal_group(self, sig: signal.Signals) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)


def log_tail(path: str | Path, lines: int) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


Started = tuple[ProcessRecord, "subprocess.Popen[bytes]"]


def start_process(
    name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Started:
    """Start ``argv`` in a new session, stdin closed, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return ProcessRecord(name, proc.pid, str(log_path), _proc_start_time(proc.pid)), proc


def stop_all(records: list[ProcessRecord], grace: float) -> None:
    """SIGTERM each group, wait up to ``grace`` seconds for all, then SIGKILL the rest."""
    for record in records:
        record.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(r.alive() for r in records) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    stubborn = [r for r in records if r.alive()]
    for record in stubborn:
        print(
            f"{record.name} (pid {record.pid}) did not stop within {grace:g}s of SIGTERM; "
            "killing it",
            file=sys.stderr,
        )
        record.signal_group(signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while any(r.alive() for r in stubborn) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
