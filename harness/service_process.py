"""Run an interactive task's HTTP server as a child process and stand in for it towards the agent.

Notebooks and TensorBoards are third-party servers we start, not code we control, so the task's
main process is this small supervisor. It:

1. starts the server as a child (same process group, so the agent's group kill reaches it too;
   stdin is ``/dev/null`` so an interactive "shut down? (y/n)" prompt can never block it);
2. polls one URL on the server until it answers 200 — only then can the master's proxy forward
   to it, so reporting ready earlier would give users errors instead of a "starting" state;
3. reports ready to the master (``harness.service.report_ready``);
4. waits for the child, forwarding SIGTERM and SIGINT to it as SIGTERM (both servers stop cleanly
   on SIGTERM; Jupyter would ask for confirmation on SIGINT), and exits with the child's code,
   except that a stop we forwarded counts as success (exit 0).

If the child exits before it is ready, or never answers, the task fails with one line saying so.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

import httpx

from harness.client import APIError, MasterUnreachableError
from harness.service import TaskEnv, report_ready

# Jupyter and TensorBoard start in seconds, but a cold agent (first import, slow disk) can be slow.
READY_TIMEOUT_SECONDS = 120.0
POLL_INTERVAL_SECONDS = 0.2
PROBE_TIMEOUT_SECONDS = 5.0
# How long a forwarded stop may take before the child is killed. Shorter than any sensible agent
# grace period, so that normally we, not the agent's SIGKILL, end the child.
STOP_GRACE_SECONDS = 20.0
# A master that is briefly unreachable (restarting) should not fail a task that started fine.
REPORT_RETRY_SECONDS = 60.0

_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ServiceStartError(Exception):
    """The service could not be started; the message is one line for the task's log.

    ``exit_code`` is the supervisor's exit code: the child's own when it died first, else 1.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ServiceSpec:
    """What to run and how to tell that it is up.

    ``ready_url`` is polled with ``ready_headers`` until it answers 200. ``env`` is the child's
    whole environment (``None``: inherit ours).
    """

    name: str
    argv: Sequence[str]
    ready_url: str
    ready_message: str
    ready_headers: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] | None = None
    cwd: str | None = None


class _Supervisor:
    """Holds the child and the "stop requested" state the signal handlers share."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.spec = spec
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_requested_at: float | None = None

    # ---- signals ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in _FORWARDED_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            _log(f"received {signal.Signals(signum).name}; stopping the {self.spec.name}")
        self._stop_child()

    def _stop_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        return self.stop_requested_at is not None

    # ---- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.child = subprocess.Popen(
                list(self.spec.argv),
                env=None if self.spec.env is None else dict(self.spec.env),
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
            )
        except OSError as e:
            raise ServiceStartError(f"cannot start the {self.spec.name}: {e}") from e
        if self.stopping:  # a signal arrived while we were starting it
            self._stop_child()

    def wait_until_ready(self, timeout: float) -> None:
        """Return once the server answers 200; raise if it exits or times out first.

        Returns early (without raising) when a stop was requested meanwhile.
        """
        assert self.child is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(timeout=PROBE_TIMEOUT_SECONDS, trust_env=False) as http:
            while not self.stopping:
                code = self.child.poll()
                if code is not None:
                    raise ServiceStartError(
                        f"the {self.spec.name} exited with {_describe(code)} before it was ready "
                        "(its own log above says why)",
                        exit_code=exit_status(code, stopped=False) or 1,
                    )
                try:
                    response = http.get(self.spec.ready_url, headers=dict(self.spec.ready_headers))
                except httpx.TransportError as e:
                    last = type(e).__name__
                else:
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}"
                if time.monotonic() >= deadline:
                    raise ServiceStartError(
                        f"the {self.spec.name} did not answer at {self.spec.ready_url} within "
                        f"{timeout:.0f}s (last: {last})"
                    )
                time.sleep(POLL_INTERVAL_SECONDS)

    def wait_for_exit(self) -> int:
        """Wait for the child, killing it if a forwarded stop takes too long; its exit code."""
        assert self.child is not None
        while True:
            try:
                return self.child.wait(timeout=POLL_INTERVAL_SECONDS)
            except subprocess.TimeoutExpired:
                started = self.stop_requested_at
                if started is not None and time.monotonic() - started > STOP_GRACE_SECONDS:
                    _log(f"the {self.spec.name} ignored SIGTERM for {STOP_GRACE_SECONDS:.0f}s")
                    self.child.kill()

    def abort(self) -> None:
        """Stop the child after a failure of ours (not the child's)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        self._stop_child()
        self.wait_for_exit()


def run_service(
    task: TaskEnv,
    host: str,
    port: int,
    spec: ServiceSpec,
    *,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> int:
    """Run ``spec`` to completion as described in the module docstring; the exit code to use."""
    supervisor = _Supervisor(spec)
    supervisor.install_signal_handlers()
    try:
        supervisor.start()
        supervisor.wait_until_ready(ready_timeout)
    except ServiceStartError as e:
        _log(str(e))
        if supervisor.child is not None:
            supervisor.abort()
        return e.exit_code
    if not supervisor.stopping:
        try:
            _report_ready_with_retries(task, host, port)
        except (APIError, MasterUnreachableError) as e:
            _log(f"cannot tell the master that the {spec.name} is ready: {e}")
            supervisor.abort()
            return 1
        print(spec.ready_message, flush=True)
    code = supervisor.wait_for_exit()
    return exit_status(code, stopped=supervisor.stopping)


def local_url(host: str, port: int, path: str) -> str:
    """``http://host:port/path`` with IPv6 hosts bracketed; ``path`` starts with ``/``."""
    netloc = f"[{host}]" if ":" in host else host
    return f"http://{netloc}:{port}{path}"


def exit_status(returncode: int, *, stopped: bool) -> int:
    """The supervisor's exit code for a child's ``returncode``.

    A child that stopped because we forwarded a stop (cleanly, or killed by that signal or by our
    SIGKILL after the grace period) is a success; a signal death otherwise is ``128 + N`` like
    a shell reports it.
    """
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)
    if stopped and (returncode == 0 or -returncode in stop_signals):
        return 0
    if returncode < 0:
        return 128 - returncode
    return returncode


def _report_ready_with_retries(task: TaskEnv, host: str, port: int) -> None:
    deadline = time.monotonic() + REPORT_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            report_ready(task, host, port)
            return
        except MasterUnreachableError as e:
            if time.monotonic() + delay > deadline:
                raise
            _log(f"{e}; retrying")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"code {returncode}"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
