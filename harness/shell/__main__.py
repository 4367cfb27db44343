"""``python -m harness.shell``: what a shell task runs on its agent.

Serves SSH to the holders of the keys in ``DET_SHELL_AUTHORIZED_KEYS`` on the address facing
the master, with a host key made up on the spot (clients reach the server through the master's
proxy and cannot pin it anyway), tells the master it is ready, and serves until ``SIGTERM`` or
``SIGINT``; then ends every process it started and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from types import FrameType

from harness.client import ClientError
from harness.service import TaskEnv, bind_host, report_ready
from harness.shell.keys import generate_keypair, load_private_key, parse_authorized_keys
from harness.shell.server import ShellServer

log = logging.getLogger("harness.shell")

READY_TIMEOUT_SECONDS = 10.0


def wait_until_answering(host: str, port: int, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    """Return once an SSH server on ``host:port`` sends its version line; else TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0) as probe:
                if probe.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ssh server on {host}:{port} did not answer")
        time.sleep(0.05)


def _fail(message: str) -> int:
    print(f"harness.shell: {message}", file=sys.stderr, flush=True)
    return 2


def main() -> int:
    # The task's log lines get their timestamps from the agent.
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s", force=True)
    # Paramiko logs a traceback for every connection that ends before the key exchange (our own
    # readiness probe, port scanners) and httpx a line per request; our own lines say what
    # matters.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        env = TaskEnv.from_environ()
    except RuntimeError as e:
        return _fail(str(e))
    keys_text = os.environ.get("DET_SHELL_AUTHORIZED_KEYS", "")
    if not keys_text.strip():
        return _fail(
            "DET_SHELL_AUTHORIZED_KEYS is unset or empty: it must hold the OpenSSH public key(s) "
            "allowed to log in (the master sets it when it starts a shell)"
        )
    try:
        authorized = parse_authorized_keys(keys_text)
    except ValueError as e:
        return _fail(f"DET_SHELL_AUTHORIZED_KEYS: {e}")
    if not authorized:
        return _fail("DET_SHELL_AUTHORIZED_KEYS holds no public key")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    host = bind_host(env.master_url)
    host_key = load_private_key(generate_keypair().private_pem)
    with ShellServer(host_key, authorized, host, 0) as server:
        server.start()
        try:
            wait_until_answering(host, server.port)
            report_ready(env, host, server.port)
        except (TimeoutError, ClientError) as e:
            print(f"harness.shell: could not report ready: {e}", file=sys.stderr, flush=True)
            return 1
        log.info(
            "ssh server for task %s listening on %s:%d (host key %s)",
            env.task_id,
            host,
            server.port,
            host_key.fingerprint,
        )
        stop.wait()
        log.info("stopping the ssh server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
