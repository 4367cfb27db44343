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
  OOM kill), the kernel kills the task at once instead of leaving a ghost GPU user. The signal
  fires when the *thread* that forked exits, which is why processes are only spawned from the
  event loop's thread. It covers the main process only; the rest of the group is killed by the
  :class:`~agent.guard.GroupGuard` watchdog.
- With ``isolation="uid"`` (see :mod:`agent.isolation`) each allocation runs as its own uid
  from a :class:`~agent.isolation.UidPool`, in a work dir it owns (0700) with ``HOME`` and
  ``TMPDIR`` inside it; when it ends, every process left with that uid is killed and the work
  dir's top goes back to root before the uid is handed out again.
- Output is read in chunks and split on ``\\n``; a line longer than :data:`MAX_LINE_BYTES` is
  cut there and the rest of it discarded. Bytes are decoded as UTF-8 with replacement.

Every message about one allocation goes out through ``emit`` in order: started, log batches,
then exited, with all of its logs flushed before the exit.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from agent import isolation
from agent.guard import GroupGuard
from agent.isolation import Isolation, UidPool, UidsExhausted
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
from agent.workdir import StartError, link_bind_mounts, prepare_directory

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024  # longer lines are cut here
MAX_BATCH_ENTRIES = 1000  # a batch is sent early once it holds this many lines
READ_CHUNK_BYTES = 64 * 1024
PIPE_DRAIN_TIMEOUT = 2.0  # seconds to wait for output pipes after the main process exits
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

StdType = Literal["stdout", "stderr"]
Emit = Callable[[AllocationStarted | AllocationExited | LogBatch], None]


def _now() -> datetime:
    return datetime.now(UTC)


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
    uid: int | None = None  # its own uid under isolation "uid"
    directory: Path | None = None


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
        isolation: Isolation = "none",
        uid_range: tuple[int, int] = (20000, 29999),
    ) -> None:
        """``isolation="uid"`` runs each allocation as its own uid from ``uid_range`` (the agent
        must be root and have checked reachability, see :func:`agent.isolation.resolve`)."""
        self.work_dir = work_dir
        self.agent_id = agent_id
        self.slots = {slot.id: slot for slot in slots}
        self.emit = emit
        self.log_batch_interval = log_batch_interval
        self.kill_grace_period = kill_grace_period
        self._allocations: dict[str, _Allocation] = {}
        self._preexec = _die_with_parent()
        self._guard = GroupGuard()
        self.isolation: Isolation = isolation
        self.uids = UidPool(*uid_range, reserved=(os.getuid(),))

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

    def close(self) -> None:
        """Release the process-group guard; call once every allocation has exited."""
        self._guard.close()

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

    def _environment(
        self, msg: StartAllocation, uid: int | None = None, home: Path | None = None
    ) -> dict[str, str]:
        """The task's environment: the agent's own minus every ``DET_AGENT_*`` setting (its
        join token above all), then the master's ``msg.env``, then the slots. For a task with
        its own ``uid``, ``HOME`` is ``home`` and ``TMPDIR`` ``home/tmp``."""
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
        # Tasks find the agent's own interpreter and tools first (`python -m harness.shell`).
        bin_dir = os.path.dirname(sys.executable)
        path = env.get("PATH", os.defpath).split(os.pathsep)
        if bin_dir not in path:
            env["PATH"] = os.pathsep.join([bin_dir, *path])
        if uid is not None and home is not None:
            env["HOME"] = str(home)
            env["TMPDIR"] = str(home / "tmp")
            env["USER"] = env["LOGNAME"] = f"task-{uid}"  # no passwd entry: a name for tools
            env.pop("MAIL", None)
        return env

    async def _run(self, alloc: _Allocation) -> None:
        allocation_id = alloc.msg.allocation_id
        try:
            spawned = await self._spawn(alloc)
            if spawned is None:
                return
            process, stdout, stderr = spawned
            self._guard.watch(process.pid)
            log.info(
                "allocation %s started: pid %d: %.200s",
                allocation_id,
                process.pid,
                shlex.join(alloc.msg.argv),
            )
            assert alloc.started_at is not None
            self.emit(
                AllocationStarted(
                    allocation_id=allocation_id, pid=process.pid, started_at=alloc.started_at
                )
            )
            if alloc.kill_reason is not None and alloc.terminator is None:
                alloc.terminator = asyncio.create_task(self._terminate(alloc))
            readers = [
                asyncio.create_task(self._read(alloc, stdout, "stdout")),
                asyncio.create_task(self._read(alloc, stderr, "stderr")),
            ]
            flusher = asyncio.create_task(self._flush_periodically(alloc))
            exit_code = await process.wait()
            alloc.exited = True
            _signal_group(process.pid, signal.SIGKILL)  # leftovers of the group
            self._guard.forget(process.pid)
            if alloc.uid is not None:  # leftovers outside the group, too
                await asyncio.to_thread(self._clean_up, alloc)
            _, stuck = await asyncio.wait(readers, timeout=PIPE_DRAIN_TIMEOUT)
            if stuck:
                log.warning(
                    "allocation %s: a process outside its group holds its output", allocation_id
                )
            for task in [*stuck, flusher]:
                task.cancel()
            await asyncio.gather(*readers, flusher, return_exceptions=True)
            if alloc.terminator is not None:
                alloc.terminator.cancel()
            self._flush(alloc)
            reason = alloc.kill_reason or ""
            log.info(
                "allocation %s exited with %s%s",
                allocation_id,
                exit_code,
                f": {reason}" * bool(reason),
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
            self.uids.release(allocation_id)

    async def _spawn(
        self, alloc: _Allocation
    ) -> tuple[asyncio.subprocess.Process, int, int] | None:
        """Start the main process and return it with the read ends of its stdout and stderr
        pipes; on failure emit the exit and return ``None``.

        The pipes are plain ``os.pipe()`` s rather than ``subprocess.PIPE`` because asyncio's
        ``Process.wait()`` (3.11) does not return until every pipe it owns is closed, which a
        background child can delay forever.
        """
        msg = alloc.msg
        try:
            if not msg.argv:
                raise StartError("argv is empty")
            cwd = await asyncio.to_thread(
                prepare_directory, self.work_dir, msg.allocation_id, msg.files
            )
            alloc.directory = cwd
            if msg.bind_mounts:
                problems = await asyncio.to_thread(
                    link_bind_mounts, cwd, msg.bind_mounts, self.agent_id
                )
                for problem in problems:  # in the task's log, where its owner looks
                    self._append(alloc, "stderr", problem.encode())
            if self.isolation == "uid":
                try:
                    alloc.uid = self.uids.acquire(msg.allocation_id)
                except UidsExhausted as e:
                    raise StartError(str(e)) from None
                await asyncio.to_thread(self._hand_over, cwd, alloc.uid, msg.env)
            env = self._environment(msg, alloc.uid, cwd)
            if alloc.kill_reason is not None:
                reason = alloc.kill_reason
            else:
                stdout_read, stdout_write = os.pipe()
                stderr_read, stderr_write = os.pipe()
                try:
                    alloc.process = await asyncio.create_subprocess_exec(
                        *msg.argv,
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=stdout_write,
                        stderr=stderr_write,
                        start_new_session=True,
                        preexec_fn=self._preexec,
                        # Its own uid (gid = uid, no supplementary groups), if it has one.
                        # Python switches before preexec_fn runs, so the parent-death signal
                        # survives (the kernel clears it on a change of credentials).
                        user=alloc.uid,
                        group=alloc.uid,
                        extra_groups=None if alloc.uid is None else [],
                        umask=-1 if alloc.uid is None else isolation.TASK_UMASK,
                    )
                except BaseException:
                    os.close(stdout_read)
                    os.close(stderr_read)
                    raise
                finally:
                    os.close(stdout_write)
                    os.close(stderr_write)
                alloc.started_at = _now()
                return alloc.process, stdout_read, stderr_read
        except (StartError, OSError, ValueError, subprocess.SubprocessError) as e:
            reason = f"failed to start: {e}"
        if alloc.uid is not None:
            await asyncio.to_thread(self._clean_up, alloc)
        log.warning("allocation %s did not start: %s", msg.allocation_id, reason)
        self.emit(
            AllocationExited(
                allocation_id=msg.allocation_id, exit_code=None, reason=reason, ended_at=_now()
            )
        )
        return None

    @staticmethod
    def _hand_over(directory: Path, uid: int, env: dict[str, str]) -> None:
        """Give the task's work dir (and a ``tmp/`` in it) to ``uid`` and make the shared_fs
        checkpoint directory and a trial's TensorBoard directory writable by task uids (every
        part of a distributed trial, on every agent, and each restart has its own uid). A
        directory that cannot be prepared is logged; the task then reports its own permission
        error."""
        (directory / "tmp").mkdir(exist_ok=True)
        isolation.give_to(directory, uid)
        for shared, anchor in isolation.shared_directories(env):
            try:
                isolation.prepare_shared(shared, anchor)
            except OSError as e:
                log.warning("cannot prepare %s for task uids: %s", shared, e)
        tensorboard = isolation.tensorboard_directory(env)
        if tensorboard is not None:
            try:
                isolation.prepare_shared(tensorboard, Path("/"))
            except OSError as e:
                log.warning("cannot prepare %s for task uids: %s", tensorboard, e)

    def _clean_up(self, alloc: _Allocation) -> None:
        """Kill whatever still runs as the allocation's uid, close its work dir, free the uid."""
        assert alloc.uid is not None
        isolation.kill_uid(alloc.uid)
        if alloc.directory is not None:
            isolation.take_back(alloc.directory)
        self.uids.release(alloc.msg.allocation_id)
        alloc.uid = None

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

    async def _read(self, alloc: _Allocation, fd: int, stdtype: StdType) -> None:
        stream = asyncio.StreamReader()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream), pipe
        )
        try:
            await self._split_lines(alloc, stream, stdtype)
        finally:
            transport.close()

    async def _split_lines(
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
