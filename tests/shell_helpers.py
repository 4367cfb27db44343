"""Helpers for tests that talk to a shell task's SSH server (``harness.shell``).

- :func:`write_private_key`: a key file ``ssh -i`` accepts (mode 0600);
- :func:`ssh_options`: the ``ssh``/``scp`` options for a throwaway server (no known-hosts
  file, no user config, no agent, no prompts);
- :class:`ReadyRecorder`: a tiny fake master that records ``POST
  /api/v1/allocations/<id>/ready`` calls, for running a task program as a subprocess;
- :func:`wait_for`: poll a condition instead of sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def write_private_key(path: Path, private_pem: str) -> Path:
    """Write an OpenSSH private key where ``ssh -i`` will accept it (it refuses 0644 keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private_pem)
    return path


def ssh_options(key_file: Path) -> list[str]:
    """Options making ``ssh``/``scp``/``sftp`` use only ``key_file`` and trust any host key."""
    return [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-i",
        str(key_file),
    ]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Return ``condition()``'s first truthy value, polling; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class ReadyCall:
    allocation_id: str
    body: dict[str, Any]
    authorization: str | None


class ReadyRecorder:
    """A fake master on 127.0.0.1 that answers ``{}`` to ``POST
    /api/v1/allocations/<id>/ready`` and records each call; 404 for anything else."""

    def __init__(self) -> None:
        self.calls: list[ReadyCall] = []
        self.called = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if (
                    len(parts) == 5
                    and parts[:3] == ["api", "v1", "allocations"]
                    and parts[4] == "ready"
                ):
                    body = json.loads(raw or b"{}")
                    authorization = self.headers.get("Authorization")
                    recorder.calls.append(ReadyCall(parts[3], body, authorization))
                    recorder.called.set()
                    self._answer(200, {})
                    return
                self._answer(404, {"code": 5, "message": "not found", "details": []})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> ReadyRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
