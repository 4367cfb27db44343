"""Running each task as its own unprivileged uid.

An agent running as root gives every allocation a uid of its own from ``task_uid_range`` (no
passwd entry needed; gid = uid, no supplementary groups). What that buys:

- ``/proc/<pid>/environ`` of a task (its session token) is readable only by that uid and root:
  the kernel allows it to the same uid only while the process is dumpable, which it is again
  after ``execve`` of an ordinary binary, and to no other unprivileged uid.
- The task's work directory is owned by its uid, mode 0700; ``HOME`` and ``TMPDIR`` point into
  it, so nothing lands in root's home or a shared ``/tmp``.
- The agent itself stays root, so no task can read the agent's environment (its join token).
- When the task ends, every process left with its uid is killed (a ``setsid``'d child escapes
  the process group, not the uid) before the uid is handed out again.

Isolation needs the task runtime (the agent's Python and its packages) and the work directory
to be reachable by other uids: :func:`unreachable_directories` names the directories that
block it. ``isolation: auto`` falls back to ``none`` with one warning then; ``uid`` refuses to
start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

log = logging.getLogger(__name__)

Isolation = Literal["uid", "none"]
WORK_ROOT_MODE = 0o711  # task uids may pass through the agent's work dir, not list it
TASK_DIR_MODE = 0o700
TASK_UMASK = 0o022  # checkpoints and TensorBoard events stay readable by the master and others
UID_LOCK_DIR = Path("/run/flotilla-agent/task-uids")  # one lock file per uid held, machine-wide
KILL_WAIT = 5.0  # seconds to wait for a task uid's processes to die after SIGKILL


class IsolationError(Exception):
    """Per-task uids were required but cannot work here; ``str()`` says why and what to do."""


class UidsExhausted(Exception):
    """Every uid of the range is held by a live allocation or still owns processes."""


def parse_uid_range(text: str) -> tuple[int, int]:
    """``"20000-29999"`` → ``(20000, 29999)``; :class:`ValueError` naming what is allowed."""
    parts = text.strip().split("-")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected '<first>-<last>' uids, e.g. '20000-29999'; got {text!r}")
    first, last = (int(p) for p in parts)
    if not 1 <= first <= last <= 2**31 - 2:
        raise ValueError(
            f"expected 1 <= first <= last <= {2**31 - 2} (uid 0 is root); got {first}-{last}"
        )
    return first, last


def _blocks_others(path: Path) -> bool:
    try:
        return not os.stat(path).st_mode & stat.S_IXOTH
    except FileNotFoundError:
        return False  # created later by the agent, with a traversable mode


def unreachable_directories(paths: Iterable[Path]) -> list[Path]:
    """Directories on the way to ``paths`` (each path itself included when it is a directory)
    that other uids cannot traverse (no ``o+x``), in order and without repeats."""
    blocking: list[Path] = []
    for path in paths:
        resolved = Path(os.path.realpath(path))
        chain = [*reversed(resolved.parents), resolved]
        for directory in chain:
            if directory.is_dir() and _blocks_others(directory) and directory not in blocking:
                blocking.append(directory)
    return blocking


def runtime_paths(work_dir: Path) -> list[Path]:
    """What a task uid must reach: the real interpreter, the venv and base prefixes, and the
    directories above the work dir (the agent makes the work dir itself 0711)."""
    return [
        Path(os.path.realpath(sys.executable)).parent,
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(os.path.realpath(work_dir)).parent,
    ]


def resolve(mode: str, work_dir: Path) -> tuple[Isolation, str]:
    """The isolation an agent configured with ``mode`` (auto, uid, none) gets here, and, when
    ``auto`` falls back to ``none``, one line saying why. :class:`IsolationError` when ``uid``
    is required but blocked."""
    if mode == "none":
        return "none", ""
    if not sys.platform.startswith("linux"):
        blocker = f"per-task uids need Linux (this is {sys.platform})"
    elif os.geteuid() != 0:
        blocker = f"the agent runs as uid {os.geteuid()}, not root, so it cannot switch users"
    else:
        blocked = unreachable_directories(runtime_paths(work_dir))
        blocker = (
            "task uids cannot reach the agent's Python or work dir: "
            + ", ".join(str(d) for d in blocked)
            + " (no o+x); fix: chmod o+x "
            + " ".join(str(d) for d in blocked)
            + ", or install Flotilla and the work dir outside them"
            if blocked
            else ""
        )
    if not blocker:
        return "uid", ""
    if mode == "uid":
        raise IsolationError(f"isolation: uid is required but {blocker}")
    return "none", f"tasks are NOT isolated from each other (isolation: none): {blocker}"


_GONE_STATES = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def live_processes(uids: range) -> dict[int, list[int]]:
    """Pids of processes owned by ``uids`` (effective uid), by uid, through ``psutil``.
    Zombies (dead, waiting to be reaped) and processes that vanish while looking are left out."""
    found: dict[int, list[int]] = {}
    for process in psutil.process_iter(["uids", "status"]):
        uid_info, status = process.info["uids"], process.info["status"]
        if uid_info is None or status is None or status in _GONE_STATES:
            continue
        if uid_info.effective in uids:
            found.setdefault(uid_info.effective, []).append(process.pid)
    return found


def processes_of(uid: int) -> list[int]:
    """Live pids owned by ``uid``."""
    return live_processes(range(uid, uid + 1)).get(uid, [])


def kill_uid(uid: int, wait: float = KILL_WAIT) -> None:
    """SIGKILL every process of ``uid`` and wait up to ``wait`` seconds for them to die. A
    child switches to the uid and calls ``kill(-1, SIGKILL)``, which signals all of the uid's
    processes at once (a fork bomb cannot outrun it)."""

    def as_uid_kill_all() -> None:
        os.kill(-1, signal.SIGKILL)

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["/bin/true"],
            user=uid,
            group=uid,
            extra_groups=[],
            preexec_fn=as_uid_kill_all,
            check=False,
            timeout=10,
        )
    deadline = time.monotonic() + wait
    while left := processes_of(uid):
        if time.monotonic() > deadline:
            log.error("processes %s of task uid %d survived SIGKILL", left, uid)
            return
        for pid in left:  # in case the helper could not run: one by one
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


@dataclass
class UidPool:
    """Uids of ``[first, last]`` handed out one per live allocation, exclusive on this machine.

    Several agents may run on one machine with the same range (``det deploy local``, tests), so
    a uid is held with an ``flock`` on ``<lock_dir>/<uid>`` for as long as its allocation runs
    (the kernel drops the lock when the agent dies, however it dies), and a uid that still owns
    a live process is skipped."""

    first: int
    last: int
    reserved: Collection[int] = ()
    lock_dir: Path = UID_LOCK_DIR
    in_use: dict[str, int] = field(default_factory=dict)
    _locks: dict[str, int] = field(default_factory=dict)

    def acquire(self, allocation_id: str) -> int:
        """A uid no live allocation on this machine holds and no process owns;
        :class:`UidsExhausted` if none."""
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        taken = set(self.in_use.values()) | set(self.reserved)
        busy = live_processes(range(self.first, self.last + 1))
        for uid in range(self.first, self.last + 1):
            if uid in taken or uid in busy:
                continue
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # another agent's allocation holds it
                continue
            self.in_use[allocation_id] = uid
            self._locks[allocation_id] = fd
            return uid
        raise UidsExhausted(
            f"no free task uid in {self.first}-{self.last}: {len(self.in_use)} allocation(s) "
            "here hold one and the rest are held by other agents or still own processes; "
            "widen task_uid_range"
        )

    def release(self, allocation_id: str) -> None:
        """Give the uid back; call once nothing runs as it any more."""
        self.in_use.pop(allocation_id, None)
        fd = self._locks.pop(allocation_id, None)
        if fd is not None:
            os.close(fd)


def give_to(directory: Path, uid: int, mode: int = TASK_DIR_MODE) -> None:
    """Make ``directory`` and everything under it owned by ``uid``:``uid`` (links themselves,
    never their targets); ``directory`` gets ``mode``."""
    os.lchown(directory, uid, uid)
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), uid, uid)
    os.chmod(directory, mode)


def take_back(directory: Path) -> None:
    """After the task: the directory's top goes back to root (0700), so whoever gets the uid
    next cannot enter the finished task's files."""
    with contextlib.suppress(FileNotFoundError):
        os.lchown(directory, 0, 0)
        os.chmod(directory, TASK_DIR_MODE)


def shared_directories(env: Mapping[str, str]) -> list[tuple[Path, Path]]:
    """Directories on shared storage that a task writes and other tasks' uids write too, as
    ``(directory, anchor)``: the shared_fs checkpoint storage root named in the task's
    environment, anchored at its ``host_path`` (which must already exist: it is the mount)."""
    from harness.storage.shared_fs import storage_root

    found: list[tuple[Path, Path]] = []
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        storage = json.loads(env.get("DET_CHECKPOINT_STORAGE") or "null")
        if isinstance(storage, dict) and storage.get("type") == "shared_fs":
            root = storage_root(storage["host_path"], storage.get("storage_path"))
            found.append((root, Path(os.path.normpath(storage["host_path"]))))
    return found


def tensorboard_directory(env: Mapping[str, str]) -> Path | None:
    """The directory a trial writes its TensorBoard events to (``harness.pytorch.tensorboard``'s
    layout under ``DET_TENSORBOARD_DIR``, spelled out here: importing it would import torch),
    or None for a task that is no trial."""
    root = env.get("DET_TENSORBOARD_DIR", "").strip()
    experiment, trial = env.get("DET_EXPERIMENT_ID", ""), env.get("DET_TRIAL_ID", "")
    if not (root and experiment.isdigit() and trial.isdigit()):
        return None
    return Path(root) / "experiment" / str(int(experiment)) / "trial" / str(int(trial))


def prepare_shared(directory: Path, anchor: Path) -> None:
    """Make ``directory`` writable by every task uid, like ``/tmp`` (mode bits ``o+wx`` and
    sticky): any task may add a checkpoint, only its owner (and root: the master's GC) may
    rename or remove it. Missing directories between ``anchor`` and it are created 0755 by
    root; nothing is created when ``anchor`` is missing (an unmounted shared file system must
    fail loudly in the harness, not fill the local disk)."""
    if not anchor.is_dir() or not (directory == anchor or anchor in directory.parents):
        return
    missing = [p for p in [directory, *directory.parents] if not p.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o755)
    mode = os.stat(directory).st_mode
    wanted = mode | stat.S_ISVTX | stat.S_IWOTH | stat.S_IXOTH
    if stat.S_IMODE(mode) != stat.S_IMODE(wanted):
        os.chmod(directory, stat.S_IMODE(wanted))
        log.info("made %s writable by task uids (mode %o)", directory, stat.S_IMODE(wanted))
    blocked = unreachable_directories([directory.parent])
    if blocked:
        log.warning(
            "task uids cannot reach %s: no o+x on %s", directory, ", ".join(map(str, blocked))
        )
