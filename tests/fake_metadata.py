"""A loopback fake of an instance metadata service: AWS IMDSv2 or the GCP metadata server.

No emulator of either exists, so this follows their public references for the few paths the
agent reads (see ``agent/spot.py`` for the same facts from the agent's side):

AWS (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html,
.../spot-instance-termination-notices.html, .../rebalance-recommendations.html):
- ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` (1–21600), else 400;
  a GET with ``X-Forwarded-For`` or to the token path is refused (403/405 in the real service,
  we answer 405 to a GET on the token path);
- every ``GET /latest/meta-data/...`` needs a valid ``X-aws-ec2-metadata-token``, else 401
  (IMDSv2 required, as our launch templates set ``HttpTokens: required``);
- ``spot/instance-action`` and ``events/recommendations/rebalance`` answer 404 until set, then
  JSON ``{"action": ..., "time": ...}`` / ``{"noticeTime": ...}``.

GCP (https://cloud.google.com/compute/docs/metadata/querying-metadata,
.../instances/create-use-preemptible#detecting_if_an_instance_was_preempted):
- every request needs ``Metadata-Flavor: Google`` (else 403) and the answer carries it;
- ``instance/preempted`` answers ``TRUE``/``FALSE`` with an ``ETag``; with
  ``wait_for_change=true`` it hangs until the value's ETag differs from ``last_etag`` (or, with
  no ``last_etag``, until the next change) or ``timeout_sec`` passes, then answers the current
  value.

Every request is recorded (method, path, time) so tests can assert how the agent polled.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

AWS_MAX_TTL = 21600


class FakeMetadata:
    """One instance's metadata service on 127.0.0.1; ``url`` is its base URL."""

    def __init__(self, cloud: Literal["aws", "gcp"]) -> None:
        self.cloud = cloud
        self.requests: list[tuple[str, str, float]] = []
        self._instance_action: dict[str, str] | None = None
        self._rebalance: dict[str, str] | None = None
        self._preempted = False
        self._tokens: dict[str, float] = {}  # token → expiry (monotonic)
        self._changed = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_PUT(self) -> None:
                fake._record(self)
                fake._aws_put(self) if fake.cloud == "aws" else self._answer(404, "")

            def do_GET(self) -> None:
                fake._record(self)
                if fake.cloud == "aws":
                    fake._aws_get(self)
                else:
                    fake._gcp_get(self)

            def _answer(
                self, status: int, body: str, headers: dict[str, str] | None = None
            ) -> None:
                data = body.encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        with self._changed:
            self._changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # ---- what the cloud announces ---------------------------------------------------------------

    def interrupt(self, action: str, at: str) -> None:
        """AWS: schedule an instance-action (``at`` like ``2026-12-07T12:04:10Z``)."""
        self._instance_action = {"action": action, "time": at}

    def recommend_rebalance(self, notice_time: str) -> None:
        self._rebalance = {"noticeTime": notice_time}

    def preempt(self) -> None:
        """GCP: the instance is preempted; waiting requests answer at once."""
        with self._changed:
            self._preempted = True
            self._changed.notify_all()

    def paths(self, method: str = "GET") -> list[str]:
        return [p for m, p, _ in self.requests if m == method]

    # ---- handlers -------------------------------------------------------------------------------

    def _record(self, request: BaseHTTPRequestHandler) -> None:
        self.requests.append((request.command, urlsplit(request.path).path, time.monotonic()))

    def _aws_put(self, request: BaseHTTPRequestHandler) -> None:
        answer = request._answer  # type: ignore[attr-defined]
        if urlsplit(request.path).path != "/latest/api/token":
            answer(404, "")
            return
        ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= AWS_MAX_TTL:
            answer(400, "")
            return
        token = secrets.token_urlsafe(32)
        self._tokens[token] = time.monotonic() + int(ttl)
        answer(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def expire_tokens(self) -> None:
        self._tokens.clear()

    def _aws_get(self, request: BaseHTTPRequestHandler) -> None:
        answer = request._answer  # type: ignore[attr-defined]
        path = urlsplit(request.path).path
        if path == "/latest/api/token":
            answer(405, "")
            return
        token = request.headers.get("X-aws-ec2-metadata-token", "")
        if self._tokens.get(token, 0) < time.monotonic():
            answer(401, "")
            return
        body: dict[str, str] | None = None
        if path == "/latest/meta-data/spot/instance-action":
            body = self._instance_action
        elif path == "/latest/meta-data/events/recommendations/rebalance":
            body = self._rebalance
        elif path == "/latest/meta-data/instance-id":
            answer(200, "i-0fake", {"Content-Type": "text/plain"})
            return
        if body is None:
            answer(404, "")
            return
        answer(200, json.dumps(body), {"Content-Type": "text/plain"})

    def _gcp_get(self, request: BaseHTTPRequestHandler) -> None:
        answer = request._answer  # type: ignore[attr-defined]
        parts = urlsplit(request.path)
        if request.headers.get("Metadata-Flavor") != "Google":
            answer(403, "Missing Metadata-Flavor:Google header.")
            return
        flavor = {"Metadata-Flavor": "Google", "Content-Type": "application/text"}
        if parts.path == "/computeMetadata/v1/instance/id":
            answer(200, "1234567890123456789", flavor)
            return
        if parts.path != "/computeMetadata/v1/instance/preempted":
            answer(404, "", flavor)
            return
        query = parse_qs(parts.query)
        if query.get("wait_for_change") == ["true"]:
            last = query.get("last_etag", [None])[0]
            timeout = float(query.get("timeout_sec", ["300"])[0])
            with self._changed:
                first = self._etag()
                self._changed.wait_for(lambda: self._etag() != (last or first), timeout=timeout)
        value = "TRUE" if self._preempted else "FALSE"
        answer(200, value, {**flavor, "ETag": self._etag()})

    def _etag(self) -> str:
        return hashlib.sha1(str(self._preempted).encode()).hexdigest()[:16]
