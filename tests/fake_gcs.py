"""A loopback stand-in for the four GCS JSON API calls checkpoint storage makes, plus the GCE
metadata server's token endpoint.

Real GCS needs credentials and the network; emulators need Docker. This is an
``http.server`` on a free 127.0.0.1 port keeping objects in memory, strict where the client
could go wrong (bearer token, URL-encoded object names, pagination) so tests catch it:

- ``POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=…``
- ``GET /storage/v1/b/{bucket}/o/{name}?alt=media``
- ``GET /storage/v1/b/{bucket}/o?prefix=…&pageToken=…``
- ``DELETE /storage/v1/b/{bucket}/o/{name}``
- ``GET /computeMetadata/v1/instance/service-accounts/default/token`` (``Metadata-Flavor``)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

METADATA_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"


@dataclass
class FakeGCSState:
    """What the fake holds and how it behaves; tests read and tweak it directly."""

    buckets: set[str] = field(default_factory=set)
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    token: str | None = None
    """Bearer token every storage call must carry; None accepts anything."""
    metadata_token: str = "metadata-token"
    page_size: int = 1000
    fail_next: int = 0
    """Answer this many upcoming storage calls with 503 (to exercise retries)."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self, bucket: str) -> list[str]:
        with self.lock:
            return sorted(name for b, name in self.objects if b == bucket)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    disable_nagle_algorithm = True  # else each small response waits ~40 ms for a delayed ACK
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---- plumbing ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"code": status, "message": message}})

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _route(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self._body() if self.command in ("POST", "PUT") else b""
        if url.path == METADATA_TOKEN_PATH:
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._error(403, "missing Metadata-Flavor: Google")
            return self._json(
                200,
                {"access_token": state.metadata_token, "expires_in": 3599, "token_type": "Bearer"},
            )
        with state.lock:
            state.requests.append((self.command, self.path))
            if state.fail_next > 0:
                state.fail_next -= 1
                return self._error(503, "injected failure")
        if state.token is not None and self.headers.get("Authorization") != f"Bearer {state.token}":
            return self._error(401, "missing or wrong bearer token")

        parts = url.path.split("/")
        # ['', 'upload', 'storage', 'v1', 'b', bucket, 'o'] or ['', 'storage', 'v1', 'b', bucket,
        # 'o', name?]; object names arrive percent-encoded, '/' as %2F.
        if parts[:5] == ["", "upload", "storage", "v1", "b"] and parts[6:] == ["o"]:
            return self._upload(unquote(parts[5]), query, body)
        if parts[:4] == ["", "storage", "v1", "b"] and len(parts) >= 6 and parts[5] == "o":
            bucket = unquote(parts[4])
            if len(parts) == 6:
                return self._list(bucket, query)
            if len(parts) == 7:
                return self._object(bucket, unquote(parts[6]), query)
        return self._error(404, f"no route {self.command} {url.path}")

    # ---- the API ----------------------------------------------------------------------------

    def _bucket_ok(self, bucket: str) -> bool:
        if bucket in self.server.state.buckets:
            return True
        self._error(404, f"The specified bucket does not exist: {bucket}")
        return False

    def _upload(self, bucket: str, query: dict[str, str], body: bytes) -> None:
        if self.command != "POST" or query.get("uploadType") != "media" or "name" not in query:
            return self._error(400, "expected POST ?uploadType=media&name=…")
        if not self._bucket_ok(bucket):
            return
        state = self.server.state
        with state.lock:
            state.objects[(bucket, query["name"])] = body
        self._json(200, {"bucket": bucket, "name": query["name"], "size": str(len(body))})

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        if self.command != "GET":
            return self._error(405, "list is GET")
        if not self._bucket_ok(bucket):
            return
        state = self.server.state
        prefix = query.get("prefix", "")
        size = min(int(query.get("maxResults", state.page_size)), state.page_size)
        with state.lock:
            names = sorted(n for b, n in state.objects if b == bucket and n.startswith(prefix))
            start = names.index(query["pageToken"]) if "pageToken" in query else 0
            page = names[start : start + size]
            items = [
                {"name": n, "bucket": bucket, "size": str(len(state.objects[(bucket, n)]))}
                for n in page
            ]
        answer: dict[str, Any] = {"kind": "storage#objects"}
        if items:
            answer["items"] = items
        if start + size < len(names):
            answer["nextPageToken"] = names[start + size]
        self._json(200, answer)

    def _object(self, bucket: str, name: str, query: dict[str, str]) -> None:
        if not self._bucket_ok(bucket):
            return
        state = self.server.state
        with state.lock:
            data = state.objects.get((bucket, name))
            if self.command == "DELETE" and data is not None:
                del state.objects[(bucket, name)]
        if data is None:
            return self._error(404, f"No such object: {bucket}/{name}")
        if self.command == "DELETE":
            return self._send(204)
        if self.command == "GET" and query.get("alt") == "media":
            return self._send(200, data, "application/octet-stream")
        return self._error(400, "expected GET ?alt=media or DELETE")

    do_GET = do_POST = do_DELETE = _route


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeGCSState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def fake_gcs(*buckets: str, token: str | None = None) -> Iterator[tuple[str, FakeGCSState]]:
    """Run the fake with these buckets; yields its base URL (``http://127.0.0.1:PORT``) and
    state, and shuts it down afterwards."""
    state = FakeGCSState(buckets=set(buckets), token=token)
    server = _Server(state)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
