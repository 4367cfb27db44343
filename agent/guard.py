"""Kill the agent's process groups when the agent dies, however it dies.

``PR_SET_PDEATHSIG`` (see :mod:`agent.runner`) kills an allocation's main process when the
agent dies, but not the main process's own children: a ``sh -c 'python train.py'`` loses its
``sh`` and keeps the trainer, still holding its GPU. Nothing in the kernel propagates a death
to a whole process group, so the agent keeps a small watchdog process beside it:

- the guard reads ``+<pgid>`` / ``-<pgid>`` lines on its stdin, the groups to protect;
- when its stdin reaches EOF, which the kernel causes when the agent exits for any reason
  (SIGKILL and OOM included), it sends SIGKILL to every group still listed, then exits;
- it runs in its own session with SIGINT/SIGTERM ignored, so a Ctrl-C or a ``systemctl stop``
  that also reaches it does not remove the protection before the agent has cleaned up.

The write end of its stdin is close-on-exec, so allocations never hold it open.
"""

from __future__ import annotations

import logging
import subprocess
import sys

log = logging.getLogger(__name__)

GUARD_SCRIPT = """# flotilla-agent process-group guard (see agent/guard.py)
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    sign, pgid = line[:1], int(line[1:])
    (groups.add if sign == "+" else groups.discard)(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""
CLOSE_TIMEOUT = 5.0  # seconds to wait for the guard to exit after its stdin closes


class GroupGuard:
    """Tracks process groups in a watchdog that SIGKILLs them if this process dies.

    Started lazily on the first :meth:`watch`; restarted (with every watched group) if it died.
    Synchronous and quick: each call writes one short line to a pipe.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._groups: set[int] = set()

    def watch(self, pgid: int) -> None:
        self._groups.add(pgid)
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._groups.discard(pgid)
        self._send(f"-{pgid}")

    def close(self) -> None:
        """Stop the guard; it kills the groups still watched, which should be none."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _send(self, line: str) -> None:
        if self._process is None or self._process.poll() is not None:
            if self._process is not None:
                log.warning(
                    "the process-group guard exited (%s); restarting it", self._process.returncode
                )
            self._start()
            return  # _start sent every watched group
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
        except OSError as e:
            log.warning("cannot reach the process-group guard (%s); restarting it", e)
            self._start()

    def _start(self) -> None:
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", GUARD_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                text=True,
                start_new_session=True,
            )
        except OSError as e:
            self._process = None
            log.error("cannot start the process-group guard: %s; tasks may outlive a crash", e)
            return
        assert self._process.stdin is not None
        self._process.stdin.write("".join(f"+{pgid}\n" for pgid in self._groups))
        self._process.stdin.flush()
