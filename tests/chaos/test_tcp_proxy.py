"""The chaos suite's TcpProxy does what the link-cut test relies on: it forwards, a cut drops
every connection and refuses new ones, a restore listens again on the same port."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.chaos.tcp_proxy import TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_a_cut_drops_every_connection_and_refuses_new_ones_until_restored(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy:
        port = proxy.port
        first = socket.create_connection(("127.0.0.1", port), timeout=5)
        first.sendall(b"hello")
        assert first.recv(16) == b"hello"

        proxy.cut()
        with contextlib.suppress(ConnectionResetError):  # reset, or at least ended
            assert first.recv(16) == b""
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)

        proxy.restore()
        assert proxy.port == port
        again = socket.create_connection(("127.0.0.1", port), timeout=5)
        again.sendall(b"back")
        assert again.recv(16) == b"back"
        assert (proxy.cuts, proxy.connections_made) == (1, 2)
        first.close()
        again.close()
