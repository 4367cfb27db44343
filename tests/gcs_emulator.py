"""gcp-storage-emulator on a free loopback port, and a fault-injecting proxy in front of it.

The emulator (PyPI ``gcp-storage-emulator``) speaks the GCS JSON API that google-cloud-storage
uses: media, multipart and resumable uploads with CRC32C/MD5 checks, ``alt=media`` downloads
with ``x-goog-hash``, paginated listing, deletes. It cannot fail on purpose, so
:class:`FaultyProxy` sits between client and emulator to answer the next requests with a 503
(what GCS sends when it wants a retry) or to flip a byte of a download (what a checksum must
catch). Both bind 127.0.0.1 and are stopped when their ``with`` block ends.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from gcp_storage_emulator.server import create_server
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

# The emulator warns on every response it writes as a string; that is its business, not ours.
logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def admin_client(endpoint: str) -> storage.Client:
    """A client for setting up and inspecting the emulator from a test."""
    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )


@contextmanager
def gcs_emulator(*buckets: str) -> Iterator[str]:
    """An in-memory emulator holding ``buckets``; yields its ``http://127.0.0.1:port``."""
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = admin_client(endpoint)
        for name in buckets:
            client.create_bucket(name)
        yield endpoint
    finally:
        server.stop()


@dataclass
class FaultyProxy:
    """What the proxy does to the next requests; tests set the fields while it runs."""

    upstream: str
    fail_next: int = 0
    """Answer this many coming requests with 503 instead of forwarding them."""
    corrupt_downloads: bool = False
    """Flip the first byte of every ``alt=media`` body (headers, hashes included, untouched)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    """``(method, path with query)`` of every request that reached the proxy."""
    authorizations: list[str | None] = field(default_factory=list)
    """The ``Authorization`` header of each of those requests."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_failure(self) -> bool:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return True
            return False


HOP_BY_HOP = frozenset({"connection", "transfer-encoding", "keep-alive", "content-length"})


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[tuple[str, FaultyProxy]]:
    """A loopback HTTP proxy in front of ``upstream``; yields its endpoint and its controls."""
    state = FaultyProxy(upstream)
    http = httpx.Client(base_url=upstream, timeout=30.0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with state.lock:
                state.requests.append((self.command, self.path))
                state.authorizations.append(self.headers.get("Authorization"))
            if state.take_failure():
                payload = b'{"error": {"code": 503, "message": "injected failure"}}'
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            answer = http.request(self.command, self.path, content=body, headers=headers)
            content = answer.content
            if state.corrupt_downloads and "alt=media" in self.path and content:
                content = bytes([content[0] ^ 0xFF]) + content[1:]
            self.send_response(answer.status_code)
            for key, value in answer.headers.multi_items():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-encoding":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        http.close()
        thread.join(timeout=5)
