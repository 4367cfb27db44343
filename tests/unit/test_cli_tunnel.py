"""``python -m cli.tunnel`` and ``open_tunnel`` against small WebSocket servers on loopback.

``WsServer`` plays the master's proxy: it accepts ``/proxy/<task>/`` for the tasks it knows,
answers others with an error status, records the headers it saw, and hands each connection to a
handler (an echo, or a paramiko SSH server in ``test_cli_shell_ssh.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.common import AUTH_FAILED, AUTH_SUCCESSFUL, OPEN_SUCCEEDED
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from cli import tunnel
from cli.session import TokenStore

REPO = Path(__file__).resolve().parents[2]
Handler = Callable[[ServerConnection], None]


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


class WsServer:
    """A proxy stand-in: ``tasks`` maps task ids to handlers; ``rejections`` to error answers."""

    def __init__(self) -> None:
        self.tasks: dict[str, Handler] = {}
        self.rejections: dict[str, tuple[int, str]] = {}
        self.headers: list[Headers] = []
        self.server: Server = serve(
            self._handle, "127.0.0.1", 0, process_request=self._check, compression=None
        )
        self.port = self.server.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _task(self, path: str) -> str:
        parts = path.strip("/").split("/")
        return parts[1] if len(parts) == 2 and parts[0] == "proxy" else ""

    def _check(self, ws: ServerConnection, request: Request) -> Response | None:
        self.headers.append(request.headers)
        task = self._task(request.path)
        if task in self.rejections:
            status, body = self.rejections[task]
            return ws.respond(status, body)
        if task not in self.tasks:
            return ws.respond(404, f'{{"code": 5, "message": "task {task} not found"}}')
        return None

    def _handle(self, ws: ServerConnection) -> None:
        self.tasks[self._task(ws.request.path if ws.request else "")](ws)

    def close(self) -> None:
        self.server.shutdown()
        self._thread.join(5)


@pytest.fixture(name="ws_server")
def ws_server_fixture() -> Iterator[WsServer]:
    server = WsServer()
    try:
        yield server
    finally:
        server.close()


def tunnel_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DET_")}
    env["FLOTILLA_HOME"] = str(home)
    env["PYTHONPATH"] = str(REPO)
    return env


def run_tunnel(url: str, task: str, home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.tunnel", url, task],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tunnel_env(home),
        cwd=REPO,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.timeout(60)
def test_tunnel_copies_bytes_both_ways_and_sends_the_cached_token(
    ws_server: WsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws_server.tasks["abc"] = echo
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path))
    for var in ("DET_USER", "DET_PASS"):
        monkeypatch.delenv(var, raising=False)
    store = TokenStore(ws_server.url)
    store.set_token("alice", "tok-123")
    store.set_active("alice")

    with run_tunnel(ws_server.url, "abc", tmp_path) as proc:
        assert proc.stdin and proc.stdout
        payloads = [b"SSH-2.0-test\r\n", bytes(range(256)), b"\0" * 200_000]
        for payload in payloads:
            proc.stdin.write(payload)
            proc.stdin.flush()
            assert proc.stdout.read(len(payload)) == payload
        proc.stdin.close()
        assert proc.wait(30) == 0
    assert ws_server.headers[0]["Authorization"] == "Bearer tok-123"


@pytest.mark.timeout(60)
def test_tunnel_without_a_token_sends_no_authorization(ws_server: WsServer, tmp_path: Path) -> None:
    ws_server.tasks["abc"] = echo
    proc = run_tunnel(ws_server.url.removeprefix("http://"), "abc", tmp_path)
    out, err = proc.communicate(b"", timeout=30)
    assert (proc.returncode, out, err) == (0, b"", b"")
    assert "Authorization" not in ws_server.headers[0]


@pytest.mark.timeout(60)
def test_tunnel_ends_when_the_server_closes(ws_server: WsServer, tmp_path: Path) -> None:
    def hello_and_close(ws: ServerConnection) -> None:
        ws.send(b"bye")
        ws.close()

    ws_server.tasks["abc"] = hello_and_close
    with run_tunnel(ws_server.url, "abc", tmp_path) as proc:
        assert proc.stdout
        assert proc.stdout.read() == b"bye"
        assert proc.wait(30) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (404, '{"code": 5, "message": "task gone ended at 12:00 (killed)"}', "HTTP 404: task gone"),
        (403, '{"code": 7, "message": "not your task"}', "HTTP 403: not your task"),
        (503, "task gone is not ready", "HTTP 503: task gone is not ready"),
    ],
)
def test_rejected_handshake_is_one_line_and_exit_255(
    ws_server: WsServer, tmp_path: Path, status: int, body: str, said: str
) -> None:
    ws_server.rejections["gone"] = (status, body)
    proc = run_tunnel(ws_server.url, "gone", tmp_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 255
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"cannot open a tunnel to task gone at ws://127.0.0.1:{ws_server.port}"
    )
    assert said in lines[0]


@pytest.mark.timeout(60)
def test_refused_connection_is_one_line_and_exit_255(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = run_tunnel(url, "abc", tmp_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 255
    assert err.decode() == f"cannot reach the master at {url}: connection refused\n"


def test_websocket_url() -> None:
    assert tunnel.websocket_url("https://m.example", "t") == "wss://m.example:443/proxy/t/"
    assert tunnel.websocket_url("m:9000", "t") == "ws://m:9000/proxy/t/"
    assert tunnel.websocket_url("http://m/", "t") == "ws://m:80/proxy/t/"
    with pytest.raises(ValueError, match="must not have a path"):
        tunnel.websocket_url("http://m/det/", "t")


def test_open_tunnel_raises_a_tunnel_error_for_unknown_tasks(ws_server: WsServer) -> None:
    with pytest.raises(tunnel.TunnelError, match="HTTP 404: task nope not found"):
        tunnel.open_tunnel(ws_server.url, "nope")


# ---- paramiko over open_tunnel ----------------------------------------------------------------


class AcceptNone(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_auth_none(self, username: str) -> int:
        return AUTH_SUCCESSFUL if username == "alice" else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED


def bridge_to(serve_socket: Callable[[socket.socket], None]) -> Handler:
    """A WebSocket handler that serves the connection as a plain socket (like an agent's sshd)."""

    def handle(ws: ServerConnection) -> None:
        ours, theirs = socket.socketpair()
        threading.Thread(target=serve_socket, args=(theirs,), daemon=True).start()

        def down() -> None:
            try:
                while chunk := ours.recv(65536):
                    ws.send(chunk)
            except (OSError, ConnectionClosed):
                pass
            finally:
                ws.close()

        threading.Thread(target=down, daemon=True).start()
        try:
            for message in ws:
                ours.sendall(message if isinstance(message, bytes) else message.encode())
        finally:
            ours.close()

    return handle


def paramiko_server(host_key: paramiko.PKey, server: paramiko.ServerInterface) -> Any:
    def serve_socket(sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(host_key)
        transport.start_server(server=server)
        channel = transport.accept(20)
        if channel is not None:
            channel.sendall(b"hello over ssh, " + channel.recv(100))
            channel.recv(100)  # until the client closes

    return serve_socket


@pytest.mark.timeout(60)
def test_paramiko_runs_over_open_tunnel(ws_server: WsServer) -> None:
    host_key = paramiko.ECDSAKey.generate()
    ws_server.tasks["shell-1"] = bridge_to(paramiko_server(host_key, AcceptNone()))

    sock = tunnel.open_tunnel(ws_server.url, "shell-1", token="t")
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=20)
        assert transport.get_remote_server_key().get_base64() == host_key.get_base64()
        transport.auth_none("alice")
        channel = transport.open_session(timeout=20)
        channel.sendall(b"alice")
        assert channel.recv(100) == b"hello over ssh, alice"
        channel.close()
    finally:
        transport.close()
    assert ws_server.headers[0]["Authorization"] == "Bearer t"
