"""``direct-tcpip`` channels: ``ssh -L`` (and ``-D``) forwarding from the task's side.

VS Code Remote-SSH reaches the server it starts in the task this way, and users reach a port
their job opened (a dashboard, a debugger). The task connects to the requested address before
the channel is confirmed, so a refused connection is reported to the client as one instead of
as a channel that opens and closes at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

import paramiko

log = logging.getLogger("harness.shell")

CONNECT_TIMEOUT_SECONDS = 10.0
_CHUNK = 32768


def connect(destination: tuple[str, int]) -> socket.socket | None:
    """Connect to the forwarding destination, or None (logged) when it cannot be reached."""
    host, port = destination
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS)
    except OSError as e:
        log.info("forward to %s:%d failed: %s", host, port, e)
        return None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def pump(channel: paramiko.Channel, sock: socket.socket) -> None:
    """Copy both ways until both sides are done, then close both. Blocks: run it in a thread.

    Each side's EOF is passed on as a half-close, so request/response protocols that close
    their sending side first still get their answer. A closed channel ends the connection.
    """
    _Forward(channel, sock).run()


class _Forward:
    def __init__(self, channel: paramiko.Channel, sock: socket.socket) -> None:
        self.channel = channel
        self.sock = sock
        self.client_done = threading.Event()  # the client sent EOF (or closed the channel)
        self.target_done = threading.Event()  # the destination sent EOF

    def run(self) -> None:
        upstream = threading.Thread(
            target=self._channel_to_socket, name=f"fwd{self.channel.get_id()}-up", daemon=True
        )
        upstream.start()
        try:
            while data := self.sock.recv(_CHUNK):
                self.channel.sendall(data)
            self.channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            self._abort()
        # Set before looking at the other side's flag (and the other side does the same), so
        # that whichever finishes last sees both flags and ends the channel.
        self.target_done.set()
        if self.client_done.is_set():
            self._close_channel()
        upstream.join()
        self._close_channel()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _channel_to_socket(self) -> None:
        try:
            while data := self.channel.recv(_CHUNK):
                self.sock.sendall(data)
            if not self.channel.closed:
                self.sock.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, paramiko.SSHException):
            self._abort()
        self.client_done.set()
        if self.target_done.is_set():
            return
        # Half-closed: the destination may still answer; a closed channel cannot carry it.
        self.channel.status_event.wait()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _abort(self) -> None:
        """One side failed: end both so the other copying thread stops too."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._close_channel()

    def _close_channel(self) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.channel.close()
