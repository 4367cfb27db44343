"""Runs allocations as process groups on this machine and turns their output into log batches.

How processes behave here, and what the runner does about it:

- Each allocation's main process starts a new session (``setsid``), so it leads a process group
  holding everything it forks. Killing sends SIGTERM to the whole group, waits
  ``kill_grace_period``, then sends SIGKILL to the group.
- The allocation is over when its main process exits. Whatever is left of its group then gets
  SIGKILL: a forgotten background child must not hold a GPU after its task is gone.
- A child that left the group (its own ``setsid``) escapes both; it may also keep the output
  pipes open, so after the main process exits the runner waits only
  :data:`PIPE_DRAIN_TIMEOUT` for the pipes to close.
- On Linux the main process gets ``PR_SET_PDEATHSIG = SIGKILL``: if the agent dies (crash,
  OOM kill), the kernel kills the task too instead of leaving a ghost GPU user. The signal fires
  when the *thread* that forked exits, which is why processes are only spawned from the event
  loop's thread. It covers the main process only; its own children are killed with it only if
  they die with their parent.
- Output is read in chunks and split on ``\\n``; a line longer than :data:`MAX_LINE_BYTES` is
  cut there and the rest of it discarded. Bytes are decoded as UTF-8 with replacement.

Every message about one allocation goes out through ``emit`` in order: started, log batches,
then exited, with all of its logs flushed before the exit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from agent.protocol import (
    AllocationExited,
    AllocationStarted,
    DeviceType,
    LogBatch,
    LogEntry,
    RunningAllocation,
    SlotInfo,
    StartAllocation,
)

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024  # longer lines are cut here
MAX_BATCH_ENTRIES = 1000  # a batch is sent early once it holds this many lines
READ_CHUNK_BYTES = 64 * 1024
PIPE_DRAIN_TIMEOUT = 2.0  # seconds to wait for output pipes after the main process exits
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
ALLOCATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")

StdType = Literal["stdout", "stderr"]
Emit = Callable[[AllocationStarted | AllocationExited | LogBatch], None]


class StartError(Exception):
    """The allocation cannot be started; the message says why, for the user."""


def _now() -> datetime:
    return datetime.now(UTC)


def safe_relative_path(name: str) -> PurePosixPath:
    """A context file name that stays inside the working directory, or :class:`StartError`."""
    path = PurePosixPath(name)
    if not name or "\x00" in name or path.is_absolute() or ".." in path.parts:
        raise StartError(f"unsafe file path {name!r} in the context (absolute or with '..')")
    return path


def prepare_directory(work_dir: Path, allocation_id: str, files: Mapping[str, str]) -> Path:
    """Create ``<work_dir>/<allocation_id>`` and write the base64-encoded ``files`` into it.

    Every path is checked before anything is written, so a bad context writes nothing.
    """
    if not ALLOCATION_ID.match(allocation_id):
        raise StartError(f"unsafe allocation id {allocation_id!r}")
    directory = work_dir / allocation_id
    decoded: list[tuple[Path, bytes]] = []
    for name, encoded in files.items():
        target = directory / safe_relative_path(name)
        try:
            decoded.append((target, base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError) as e:
            raise StartError(f"context file {name!r} is not valid base64: {e}") from None
    directory.mkdir(parents=True, exist_ok=True)
    root = directory.resolve()
    for target, data in decoded:
        if not target.resolve().is_relative_to(root):  # through a symlink already there
            raise StartError(f"context file {str(target)!r} would land outside {directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` setting PR_SET_PDEATHSIG=SIGKILL in the child (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the agent died before the prctl took effect
            os._exit(1)

    return preexec


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is already gone
    except PermissionError as e:
        log.error("cannot send %s to process group %d: %s", sig.name, pgid, e)


@dataclass(eq=False)
class _Allocation:
    msg: StartAllocation
    process: asyncio.subprocess.Process | None = None
    started_at: datetime | None = None
    kill_reason: str | None = None
    exited: bool = False
    pending: list[LogEntry] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    terminator: asyncio.Task[None] | None = None


class Runner:
    """Starts, tracks and kills allocations; reports about them only through ``emit``.

    Assumes it is used from one event loop, in that loop's thread.
    """

    def __init__(
        self,
        *,
        work_dir: Path,
        agent_id: str,
        slots: Sequence[SlotInfo],
        emit: Emit,
        log_batch_interval: float,
        kill_grace_period: float,
    ) -> None:
        self.work_dir = work_dir
        self.agent_id = agent_id
        self.slots = {slot.id: slot for slot in slots}
        self.emit = emit
        self.log_batch_interval = log_batch_interval
        self.kill_grace_period = kill_grace_period
        self._allocations: dict[str, _Allocation] = {}
        self._preexec = _die_with_parent()

    def start(self, msg: StartAllocation) -> bool:
        """Start ``msg`` in the background; ``False`` if that allocation is already here."""
        if msg.allocation_id in self._allocations:
            log.warning(
                "allocation %s is already running; ignoring a second start", msg.allocation_id
            )
            return False
        alloc = _Allocation(msg)
        self._allocations[msg.allocation_id] = alloc
        alloc.task = asyncio.create_task(self._run(alloc), name=f"allocation {msg.allocation_id}")
        return True

    def kill(self, allocation_id: str, reason: str) -> bool:
        """Begin killing an allocation (SIGTERM, grace, SIGKILL); its exit is reported with
        ``reason``. ``False`` if it is not here (it may have exited already)."""
        alloc = self._allocations.get(allocation_id)
        if alloc is None:
            log.info("kill for allocation %s, which is not running here", allocation_id)
            return False
        if alloc.kill_reason is None:
            alloc.kill_reason = reason
        if alloc.process is not None and alloc.terminator is None:
            alloc.terminator = asyncio.create_task(self._terminate(alloc))
        return True

    def running(self) -> list[RunningAllocation]:
        """Allocations whose main process is alive, as the hello message lists them."""
        return [
            RunningAllocation(
                allocation_id=a.msg.allocation_id, pid=a.process.pid, started_at=a.started_at
            )
            for a in self._allocations.values()
            if a.process is not None and a.started_at is not None and not a.exited
        ]

    def allocation_ids(self) -> list[str]:
        return list(self._allocations)

    async def kill_all(self, reason: str) -> None:
        """Kill every allocation and wait until each one's exit has been emitted."""
        for allocation_id in list(self._allocations):
            self.kill(allocation_id, reason)
        await self.wait_all()

    async def wait_all(self) -> None:
        tasks = [a.task for a in self._allocations.values() if a.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- one allocation ---------------------------------------------------------------------

    def _environment(self, msg: StartAllocation) -> dict[str, str]:
        unknown = [i for i in msg.slot_ids if i not in self.slots]
        if unknown:
            raise StartError(f"unknown slot id(s) {unknown}; this agent has {sorted(self.slots)}")
        # The agent's own settings (its join token above all) are not the task's business.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DET_AGENT_")}
        env.update(msg.env)
        cuda = [self.slots[i] for i in msg.slot_ids if self.slots[i].type == DeviceType.CUDA]
        env["DET_AGENT_ID"] = self.agent_id
        env["DET_SLOT_IDS"] = ",".join(str(i) for i in msg.slot_ids)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(s.uuid or str(s.id) for s in cuda)
        return env

    async def _run(self, alloc: _Allocation) -> None:
        allocation_id = alloc.msg.allocation_id
        try:
            process = await self._spawn(alloc)
            if process is None:
                return
            log.info(
                "allocation %s started: pid %d, %s", allocation_id, process.pid, alloc.msg.argv
            )
            self.emit(
                AllocationStarted(allocation_id=allocation_id, pid=process.pid, started_at=_now())
            )
            if alloc.kill_reason is not None and alloc.terminator is None:
                alloc.terminator = asyncio.create_task(self._terminate(alloc))
            assert process.stdout is not None and process.stderr is not None
            readers = [
                asyncio.create_task(self._read(alloc, process.stdout, "stdout")),
                asyncio.create_task(self._read(alloc, process.stderr, "stderr")),
            ]
            flusher = asyncio.create_task(self._flush_periodically(alloc))
            exit_code = await process.wait()
            alloc.exited = True
            _signal_group(process.pid, signal.SIGKILL)  # leftovers of the group
            _, stuck = await asyncio.wait(readers, timeout=PIPE_DRAIN_TIMEOUT)
            for reader in [*stuck, flusher]:
                reader.cancel()
            await asyncio.gather(*readers, flusher, return_exceptions=True)
            if alloc.terminator is not None:
                alloc.terminator.cancel()
            self._flush(alloc)
            reason = alloc.kill_reason or ""
            log.info(
                "allocation %s exited with %s%s",
                allocation_id,
                exit_code,
                f" ({reason})" if reason else "",
            )
            self.emit(
                AllocationExited(
                    allocation_id=allocation_id, exit_code=exit_code, reason=reason, ended_at=_now()
                )
            )
        except Exception:
            log.exception("allocation %s: the agent failed to supervise it", allocation_id)
            raise
        finally:
            del self._allocations[allocation_id]

    async def _spawn(self, alloc: _Allocation) -> asyncio.subprocess.Process | None:
        """Start the main process; on failure emit the exit and return ``None``."""
        msg = alloc.msg
        try:
            if not msg.argv:
                raise StartError("argv is empty")
            env = self._environment(msg)
            cwd = await asyncio.to_thread(
                prepare_directory, self.work_dir, msg.allocation_id, msg.files
            )
            if alloc.kill_reason is not None:
                reason = alloc.kill_reason
            else:
                alloc.process = await asyncio.create_subprocess_exec(
                    *msg.argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    preexec_fn=self._preexec,
                )
                alloc.started_at = _now()
                return alloc.process
        except (StartError, OSError, ValueError, subprocess.SubprocessError) as e:
            reason = f"failed to start: {e}"
        log.warning("allocation %s did not start: %s", msg.allocation_id, reason)
        self.emit(
            AllocationExited(
                allocation_id=msg.allocation_id, exit_code=None, reason=reason, ended_at=_now()
            )
        )
        return None

    async def _terminate(self, alloc: _Allocation) -> None:
        process = alloc.process
        assert process is not None
        log.info("killing allocation %s: %s", alloc.msg.allocation_id, alloc.kill_reason)
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.kill_grace_period)
        except TimeoutError:
            log.warning(
                "allocation %s still running %.1fs after SIGTERM; sending SIGKILL",
                alloc.msg.allocation_id,
                self.kill_grace_period,
            )
            _signal_group(process.pid, signal.SIGKILL)

    async def _read(
        self, alloc: _Allocation, stream: asyncio.StreamReader, stdtype: StdType
    ) -> None:
        pending = bytearray()
        cut = False  # the current line was too long: its head went out, drop the rest
        while chunk := await stream.read(READ_CHUNK_BYTES):
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                if not cut:
                    self._append(alloc, stdtype, bytes(pending[:end]))
                cut = False
                del pending[: end + 1]
            if len(pending) >= MAX_LINE_BYTES:
                if not cut:
                    self._append(alloc, stdtype, bytes(pending))
                cut = True
                pending.clear()
        if pending and not cut:
            self._append(alloc, stdtype, bytes(pending))

    def _append(self, alloc: _Allocation, stdtype: StdType, raw: bytes) -> None:
        raw = raw[:MAX_LINE_BYTES].removesuffix(b"\r")
        line = raw.decode("utf-8", errors="replace")
        alloc.pending.append(LogEntry(timestamp=_now(), stdtype=stdtype, line=line))
        if len(alloc.pending) >= MAX_BATCH_ENTRIES:
            self._flush(alloc)

    async def _flush_periodically(self, alloc: _Allocation) -> None:
        while True:
            await asyncio.sleep(self.log_batch_interval)
            self._flush(alloc)

    def _flush(self, alloc: _Allocation) -> None:
        if alloc.pending:
            self.emit(LogBatch(allocation_id=alloc.msg.allocation_id, entries=alloc.pending))
            alloc.pending = []
