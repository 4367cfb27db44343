"""One SSH ``session`` channel: the process it runs and the bytes between the two.

A session collects its ``env`` and ``pty-req`` requests, then an ``exec`` or ``shell`` request
starts one process, the way OpenSSH's sshd does it:

- ``exec`` runs ``$SHELL -c COMMAND``; ``shell`` runs ``$SHELL`` as a login shell (``-bash``);
- the process leads its own session (``setsid``), so hanging it up or killing it reaches its
  whole process group, and with a PTY the PTY is its controlling terminal (so job control,
  Ctrl-C and ``SIGWINCH`` on a window change work);
- without a PTY, stdout and stderr travel separately and the client's EOF closes stdin; with a
  PTY they are one stream and the client's EOF is ignored, as sshd ignores it;
- when the process has exited and its output is sent, the exit status goes back (``128 + n``
  for a death by signal ``n``, as a shell reports it) and the channel closes;
- when the client closes the channel first (or the connection drops), the process group is
  hung up (``SIGHUP``, then ``SIGKILL`` if it lingers): a shell must not outlive its user.

The environment is the task's own (what the agent gave ``python -m harness.shell``) plus what
the client asked for (``SendEnv``/``SetEnv``), ``TERM`` from the PTY request and sshd's usual
``SSH_CONNECTION``/``SSH_CLIENT``/``SSH_TTY``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pty
import pwd
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from typing import IO

import paramiko
import psutil

log = logging.getLogger("harness.shell")

READ_SIZE = 32768
# After the process exits, PTY output still arriving is sent until the PTY has been quiet this
# long (a background job may hold the PTY open forever; sshd closes it when the shell exits).
PTY_DRAIN_QUIET_SECONDS = 0.2
# How long a hung-up process group gets before SIGKILL.
HANGUP_GRACE_SECONDS = 2.0
# Shells that mean "no logins here"; a task running as such a user still gets /bin/sh.
_NO_LOGIN_SHELLS = {"nologin", "false"}


def login_shell() -> str:
    """The user's shell: ``$SHELL``, else the password database's, else ``/bin/sh``."""
    candidates = [os.environ.get("SHELL")]
    with contextlib.suppress(KeyError):
        candidates.append(pwd.getpwuid(os.getuid()).pw_shell)
    for shell in candidates:
        if (
            shell
            and os.path.isabs(shell)
            and os.path.basename(shell) not in _NO_LOGIN_SHELLS
            and os.access(shell, os.X_OK)
        ):
            return shell
    return "/bin/sh"


def exit_code(returncode: int) -> int:
    """The exit status a shell would report: a death by signal ``n`` is ``128 + n``."""
    return 128 - returncode if returncode < 0 else returncode


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def session_members(sid: int) -> list[int]:
    """Every process in session ``sid``, including background jobs that the shell moved to
    process groups of their own (pids from ``psutil``; processes that vanish are skipped)."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid:
                members.append(pid)
    return members


def _take_controlling_terminal() -> None:
    """Run in the child between fork and exec, after ``setsid``: make the PTY on stdin the new
    session's controlling terminal (what sshd and ``os.login_tty`` do; there is no Popen
    option for it). Only a system call, so it is safe in a child forked from many threads."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _set_window_size(fd: int, cols: int, rows: int, xpixels: int, ypixels: int) -> None:
    """TIOCSWINSZ; on the PTY's master side the kernel also sends the foreground process group
    ``SIGWINCH``, which is how full-screen programs learn about a resized window."""
    size = struct.pack("HHHH", _clamp(rows), _clamp(cols), _clamp(xpixels), _clamp(ypixels))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


def _clamp(value: int) -> int:
    return max(0, min(value, 0xFFFF))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _decode(value: bytes | str) -> str:
    """SSH strings are bytes; undecodable bytes survive the round trip to argv/environ."""
    if isinstance(value, str):
        return value
    return value.decode("utf-8", "surrogateescape")


class Session:
    """The state of one ``session`` channel; its methods run in the transport's thread and
    return quickly, the copying runs in threads of its own."""

    def __init__(
        self,
        channel: paramiko.Channel,
        *,
        cwd: str,
        ssh_connection: str,
        on_finished: Callable[[Session], None] = lambda session: None,
    ) -> None:
        self.channel = channel
        self._cwd = cwd
        self._ssh_connection = ssh_connection
        self._on_finished = on_finished
        self._requested_env: dict[str, str] = {}
        self._term = "xterm"
        self._pty_master: int | None = None
        self._pty_slave: int | None = None
        self._wake: tuple[int, int] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._claimed = False
        self.finished = threading.Event()

    # ---- requests (transport thread) -------------------------------------------------------

    def claim(self) -> bool:
        """Take the channel for the one program it may run; False if it is already taken."""
        if self._claimed:
            return False
        self._claimed = True
        return True

    def set_env(self, name: bytes | str, value: bytes | str) -> bool:
        key = _decode(name)
        if not key or "=" in key or "\0" in key or "\0" in _decode(value) or self._claimed:
            return False
        self._requested_env[key] = _decode(value)
        return True

    def open_pty(self, term: bytes | str, cols: int, rows: int, xpixels: int, ypixels: int) -> bool:
        if self._pty_master is not None or self._claimed:
            return False
        master, slave = pty.openpty()
        self._pty_master, self._pty_slave = master, slave
        self._term = _decode(term) or "xterm"
        try:
            _set_window_size(master, cols, rows, xpixels, ypixels)
        except OSError as e:
            log.warning("could not set the terminal size: %s", e)
        return True

    def resize(self, cols: int, rows: int, xpixels: int, ypixels: int) -> bool:
        if self._pty_master is None:
            return False
        try:
            _set_window_size(self._pty_master, cols, rows, xpixels, ypixels)
        except OSError:
            return False
        return True

    def start(self, command: str | None) -> None:
        """Start ``command`` through the shell, or the login shell itself for ``None``.

        Raises OSError when the process cannot be started.
        """
        if self.process is not None:
            raise RuntimeError("this session already runs a process")
        shell = login_shell()
        name = os.path.basename(shell)
        args = [f"-{name}"] if command is None else [name, "-c", command]
        cwd = self._cwd if os.path.isdir(self._cwd) else "/"
        if self._pty_slave is not None:
            slave = self._pty_slave
            self.process = subprocess.Popen(
                args,
                executable=shell,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=self._environment(shell),
                start_new_session=True,
                preexec_fn=_take_controlling_terminal,
            )
            os.close(slave)
            self._pty_slave = None
            self._wake = os.pipe()
            outputs = [self._thread(self._pump_pty_output, "pty-out")]
        else:
            self.process = subprocess.Popen(
                args,
                executable=shell,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=self._environment(shell),
                start_new_session=True,
            )
            assert self.process.stdout is not None and self.process.stderr is not None
            outputs = [
                self._thread(self._pump_pipe, "stdout", self.process.stdout, self.channel.sendall),
                self._thread(
                    self._pump_pipe, "stderr", self.process.stderr, self.channel.sendall_stderr
                ),
            ]
        for thread in outputs:
            thread.start()
        self._thread(self._pump_input, "stdin").start()
        self._thread(self._supervise, "wait", outputs).start()

    # ---- ending -----------------------------------------------------------------------------

    def signal_hangup(self) -> None:
        """Hang up the process group (``SIGHUP`` ends interactive shells, which ignore
        ``SIGTERM``; ``SIGTERM`` ends the rest; ``SIGCONT`` wakes stopped jobs to hear it)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGCONT):
            signal_group(process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the process group and whatever else still runs in the process's session."""
        process = self.process
        if process is None:
            return
        signal_group(process.pid, signal.SIGKILL)
        for pid in session_members(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def hang_up(self, grace: float = HANGUP_GRACE_SECONDS) -> None:
        """Hang up, and kill what is still running after ``grace`` seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.signal_hangup()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    # ---- threads ----------------------------------------------------------------------------

    def _thread(self, target: Callable[..., None], role: str, *args: object) -> threading.Thread:
        thread = threading.Thread(
            target=target, args=args, name=f"ssh-chan{self.channel.get_id()}-{role}", daemon=True
        )
        self._threads.append(thread)
        return thread

    def _environment(self, shell: str) -> dict[str, str]:
        env = dict(os.environ)
        with contextlib.suppress(KeyError):
            account = pwd.getpwuid(os.getuid())
            env.setdefault("USER", account.pw_name)
            env.setdefault("LOGNAME", account.pw_name)
            env.setdefault("HOME", account.pw_dir)
        env.update(self._requested_env)
        env["SHELL"] = shell
        client_ip, client_port, _, server_port = self._ssh_connection.split(" ")
        env["SSH_CONNECTION"] = self._ssh_connection
        env["SSH_CLIENT"] = f"{client_ip} {client_port} {server_port}"
        if self._pty_slave is not None:
            env["TERM"] = self._term
            env["SSH_TTY"] = os.ttyname(self._pty_slave)
        return env

    def _pump_pipe(self, stream: IO[bytes], send: Callable[[bytes], None]) -> None:
        """Copy one of the process's output pipes to the channel until the pipe's EOF; if the
        channel is gone, keep reading so the process never blocks on a full pipe."""
        fd = stream.fileno()
        deliver = True
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except OSError:
                return
            if not data:
                return
            if deliver:
                try:
                    send(data)
                except (OSError, EOFError, paramiko.SSHException):
                    deliver = False

    def _pump_pty_output(self) -> None:
        """Copy the PTY to the channel; once the process has exited (the supervisor writes to
        the wake pipe), send what is still arriving, then stop."""
        assert self._pty_master is not None and self._wake is not None
        master, wake = self._pty_master, self._wake[0]
        poller = select.poll()
        poller.register(master, select.POLLIN)
        poller.register(wake, select.POLLIN)
        draining = False
        deliver = True
        while True:
            ready = {
                fd for fd, _ in poller.poll(PTY_DRAIN_QUIET_SECONDS * 1000 if draining else None)
            }
            if wake in ready:
                poller.unregister(wake)
                draining = True
            if master not in ready:
                if draining and not ready:
                    return
                continue
            try:
                data = os.read(master, READ_SIZE)
            except OSError as e:
                # EIO: every process holding the PTY's other side has closed it.
                if e.errno != errno.EIO:
                    log.debug("reading the pty: %s", e)
                return
            if not data:
                return
            if deliver:
                try:
                    self.channel.sendall(data)
                except (OSError, EOFError, paramiko.SSHException):
                    deliver = False

    def _pump_input(self) -> None:
        """Copy the channel to the process's stdin (or the PTY) until the client's EOF; then,
        once the channel closes, hang up a process that is still running."""
        process = self.process
        assert process is not None
        if self._pty_master is not None:
            fd: int | None = self._pty_master
        else:
            assert process.stdin is not None
            fd = process.stdin.fileno()
        while True:
            try:
                data = self.channel.recv(READ_SIZE)
            except (OSError, EOFError, paramiko.SSHException):
                data = b""
            if not data:
                break
            if fd is None:
                continue
            try:
                _write_all(fd, data)
            except OSError:
                fd = None  # the process stopped reading; drop the rest
        if self._pty_master is None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        # In server mode the channel sets its status_event exactly when it closes.
        self.channel.status_event.wait()
        if process.poll() is None:
            log.info(
                "channel %d closed while its process runs: hanging it up", self.channel.get_id()
            )
            self.hang_up()

    def _supervise(self, outputs: list[threading.Thread]) -> None:
        """Wait for the process, then its output; report the exit status; close the channel."""
        process = self.process
        assert process is not None
        returncode = process.wait()
        if self._wake is not None:
            os.write(self._wake[1], b"x")
        for thread in outputs:
            thread.join()
        if not self.channel.closed:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self.channel.send_exit_status(exit_code(returncode))
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.close()
        deadline = time.monotonic() + HANGUP_GRACE_SECONDS + 1
        for thread in self._threads:
            if thread is not threading.current_thread() and thread not in outputs:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._release()
        self.finished.set()
        self._on_finished(self)

    def _release(self) -> None:
        """Close our file descriptors, unless a thread still blocks on one (closing it under
        the thread could hand its number to an unrelated file)."""
        if any(t.is_alive() and t is not threading.current_thread() for t in self._threads):
            log.warning(
                "channel %d: a copying thread is stuck; leaving its descriptors open",
                self.channel.get_id(),
            )
            return
        fds = [self._pty_master, *(self._wake or ())]
        self._pty_master, self._wake = None, None
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        process = self.process
        if process is not None:
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def fail(self, message: str, code: int = 127) -> None:
        """The process could not start: say why on stderr, as a shell would, and end."""
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.sendall_stderr(f"{message}\r\n".encode())
            self.channel.send_exit_status(code)
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.close()
        self.discard()
        self.finished.set()
        self._on_finished(self)

    def discard(self) -> None:
        """Free a PTY that was requested for a channel that never started a process."""
        if self.process is not None:
            return
        for fd in (self._pty_master, self._pty_slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pty_master = self._pty_slave = None
