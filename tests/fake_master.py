"""A tiny stand-in for the master, for testing task-side programs that report readiness.

It answers ``POST /api/v1/allocations/<id>/ready`` with ``{}`` and records each call (the JSON
body and the Authorization header), so a test can wait for a task to say where it listens. Any
other request gets 404. It listens on 127.0.0.1, so ``harness.service.bind_host`` of its URL is
loopback too.

Also here: what it takes to run a task-side program (``python -m harness.notebook`` …) as the
agent would against this fake: :func:`task_environ` and :class:`Program`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_READY_PATH = re.compile(r"^/api/v1/allocations/(?P<allocation>[^/]+)/ready$")


@dataclass(frozen=True)
class ReadyCall:
    """One readiness report as the master received it."""

    allocation_id: str
    body: dict[str, Any]
    authorization: str | None


class FakeMaster:
    """The recorded calls and a way to wait for them; build it with :func:`running_fake_master`."""

    def __init__(self) -> None:
        self.url = ""  # set once the server has its port
        self.ready_calls: list[ReadyCall] = []
        self._changed = threading.Condition()

    def record(self, call: ReadyCall) -> None:
        with self._changed:
            self.ready_calls.append(call)
            self._changed.notify_all()

    def wait_for_ready(self, timeout: float = 60.0) -> ReadyCall:
        """The first readiness report, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.ready_calls:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no readiness report within {timeout:.0f}s")
                self._changed.wait(remaining)
            return self.ready_calls[0]


def _handler_for(master: FakeMaster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            match = _READY_PATH.match(self.path)
            if not match:
                self._answer(404, {"code": 5, "message": f"no route {self.path}", "details": []})
                return
            body = json.loads(raw) if raw.strip() else {}
            master.record(ReadyCall(match["allocation"], body, self.headers.get("Authorization")))
            self._answer(200, {})

        def do_GET(self) -> None:
            self._answer(404, {"code": 5, "message": f"no route {self.path}", "details": []})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler


@contextmanager
def running_fake_master() -> Iterator[FakeMaster]:
    """A fake master serving on 127.0.0.1 (a free port) in a thread for the ``with`` block."""
    master = FakeMaster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(master))
    master.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield master
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---- running a task-side program against the fake ---------------------------------------------

REPO = Path(__file__).resolve().parents[1]
TASK_ID = "task-7"
ALLOCATION_ID = "task-7.1"
SESSION_TOKEN = "allocation-token"


def task_environ(master: FakeMaster, **extra: str) -> dict[str, str]:
    """Our environment plus the task variables the agent sets, pointing at ``master``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DET_MASTER": master.url,
        "DET_TASK_ID": TASK_ID,
        "DET_ALLOCATION_ID": ALLOCATION_ID,
        "DET_SESSION_TOKEN": SESSION_TOKEN,
        **extra,
    }
    env.pop("JUPYTER_TOKEN", None)
    return env


class Program:
    """A program under test, its output going to files (a pipe nobody reads could fill up and
    block the servers' logging)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self._out = cwd / "program.stdout"
        self._err = cwd / "program.stderr"
        with self._out.open("w") as out, self._err.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, *argv], env=env, cwd=cwd, stdout=out, stderr=err
            )

    def wait(self) -> tuple[int, str, str]:
        """Its exit code, stdout and stderr once it has exited."""
        code = self.process.wait(timeout=30)
        return code, self._out.read_text(), self._err.read_text()

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM it, then :meth:`wait`."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def port_is_closed(host: str, port: int) -> bool:
    """Whether nothing accepts connections on ``host:port`` (a stopped server's port)."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False
