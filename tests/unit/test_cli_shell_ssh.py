"""The ssh command ``det shell`` builds, run by the real OpenSSH client through ``cli.tunnel``.

Behind a loopback WebSocket "proxy" sits a paramiko SSH server that accepts only the shell's
key and answers an exec request, so this checks the whole path: the ProxyCommand's quoting,
the tunnel, the key file's mode and format, the user name, and ssh's exit code.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.common import AUTH_FAILED, AUTH_SUCCESSFUL, OPEN_SUCCEEDED

from cli import shell
from tests.unit.test_cli_tunnel import (  # noqa: F401  (fixtures by name)
    WsServer,
    bridge_to,
    tunnel_env,
    ws_server_fixture,
)

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the ssh client")


class ShellServer(paramiko.ServerInterface):
    """Accept one public key for user ``bob``; run an exec request by echoing the command."""

    def __init__(self, allowed: str) -> None:
        self.allowed = allowed
        self.command = b""
        self.exec_requested = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = username == "bob" and key.get_base64() == self.allowed
        return AUTH_SUCCESSFUL if ok else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return OPEN_SUCCEEDED

    def check_channel_pty_request(self, *args: object) -> bool:
        return True

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.command = command
        self.exec_requested.set()
        return True


@pytest.mark.timeout(90)
def test_real_ssh_reaches_the_shell_through_the_tunnel(
    ws_server: WsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path))
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    server = ShellServer(allowed=public.decode().split()[1])
    host_key = paramiko.ECDSAKey.generate()

    def serve_socket(sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.add_server_key(host_key)
        transport.start_server(server=server)
        channel = transport.accept(30)
        if channel is None or not server.exec_requested.wait(30):
            return
        channel.sendall(b"ran: " + server.command + b"\n")
        channel.send_exit_status(3)
        channel.close()

    ws_server.tasks["shell-1"] = bridge_to(serve_socket)
    key = shell.write_key("shell-1", pem.rstrip("\n"))
    command = shell.ssh_command(
        ws_server.url, {"id": "shell-1", "agentUserGroup": {"user": "bob"}}, key, ["echo", "hi"]
    )
    # Keep the developer's ~/.ssh/config out of it, and never prompt.
    command[1:1] = ["-F", "/dev/null", "-o", "BatchMode=yes"]
    done = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        env=tunnel_env(tmp_path),
        check=False,
    )
    assert done.returncode == 3, done.stderr.decode()
    assert done.stdout.replace(b"\r", b"") == b"ran: echo hi\n"
    assert server.command == b"echo hi"
