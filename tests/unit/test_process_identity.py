"""Process identity through ``psutil`` (not hand-parsed ``/proc``): the agent's per-uid process
lists, the shell server's session members, and the start times that tell a recycled pid apart
in ``det deploy local`` and the local provider."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.isolation import processes_of
from cli.processes import ProcessRecord, _proc_start_time, start_process, stop_all
from harness.shell.session import session_members
from provisioner.local import _started


def _exited_child() -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{child.pid}/stat", "rb") as stat:
            if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return child
        time.sleep(0.02)
    raise AssertionError("the child did not exit")


def test_processes_of_a_uid_include_live_ones_and_leave_zombies_out() -> None:
    zombie = _exited_child()
    try:
        mine = processes_of(os.geteuid())
        assert os.getpid() in mine
        assert zombie.pid not in mine
    finally:
        zombie.wait()


def test_session_members_include_this_process() -> None:
    assert os.getpid() in session_members(os.getsid(0))
    assert session_members(2**22 + 7) == []


def test_a_record_matches_only_the_process_that_started_at_its_time() -> None:
    started = _proc_start_time(os.getpid())
    assert started is not None and float(started) <= time.time()
    assert ProcessRecord("me", os.getpid(), "", started).alive()
    # The same pid with another start time is someone else's process: never signalled.
    assert not ProcessRecord("me", os.getpid(), "", "1.0").alive()
    assert _started(os.getpid()) == float(started)
    assert _started(2**22 + 7) is None


def test_a_zombie_child_counts_as_stopped_and_is_reaped() -> None:
    zombie = _exited_child()
    assert not ProcessRecord("z", zombie.pid, "", None).alive()
    assert not os.path.exists(f"/proc/{zombie.pid}")


def test_stop_all_kills_a_process_that_outlives_sigterm_and_says_how_long_it_waited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A shell that traps SIGTERM (as a server draining open connections does) and says when
    # the trap is set, so the test signals it only once it would survive.
    ready = tmp_path / "ready"
    script = f"trap '' TERM; touch {ready}; while true; do sleep 0.05; done"
    record, proc = start_process("master", ["sh", "-c", script], tmp_path / "log")
    while not ready.exists():
        time.sleep(0.01)
    stop_all([record], grace=0.2)
    proc.wait(5)
    assert not record.alive()
    assert capsys.readouterr().err == (
        f"master (pid {record.pid}) did not stop within 0.2s of SIGTERM; killing it\n"
    )
