"""Watching the instance's metadata service for spot interruption notices.

How the clouds announce that they take a spot instance back (public documentation):

- **AWS** (EC2 instance metadata, IMDSv2): a session token comes from ``PUT /latest/api/token``
  with ``X-aws-ec2-metadata-token-ttl-seconds``; every other request carries it as
  ``X-aws-ec2-metadata-token`` and gets 401 once it expired. ``GET
  /latest/meta-data/spot/instance-action`` answers 404 until an interruption is scheduled, then
  ``{"action": "terminate" | "stop" | "hibernate", "time": "2026-12-07T12:04:10Z"}`` — two
  minutes' warning; AWS recommends polling it every 5 seconds. ``GET
  /latest/meta-data/events/recommendations/rebalance`` answers 404 until the instance is at
  elevated risk, then ``{"noticeTime": "..."}``, usually well before any instance-action.
- **GCP** (Compute Engine metadata server): every request carries ``Metadata-Flavor: Google``
  and the answer carries it back. ``GET /computeMetadata/v1/instance/preempted`` answers
  ``FALSE`` or ``TRUE``; with ``?wait_for_change=true&last_etag=<ETag>`` it hangs until the
  value changes (or ``timeout_sec`` passes). A preempted VM gets 30 seconds before it stops.

Both answer on the link-local address 169.254.169.254. Off a cloud nothing answers there: the
watcher tries once with a short connect timeout, logs one line, and stops. The address is the
agent setting ``metadata_url`` so tests run a loopback fake of either service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx

from agent.protocol import InterruptionNotice, NoticeKind

log = logging.getLogger(__name__)

# AWS: "we recommend that you check for these interruption notices every 5 seconds".
AWS_POLL_SECONDS = 5.0
AWS_TOKEN_PATH = "/latest/api/token"
AWS_TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
AWS_TOKEN_HEADER = "X-aws-ec2-metadata-token"
AWS_TOKEN_TTL_SECONDS = 21600  # the maximum IMDSv2 allows: six hours
AWS_INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
AWS_REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
# GCP: "Compute Engine sends a preemption notice … you have 30 seconds" before it stops.
GCP_PREEMPTION_NOTICE = timedelta(seconds=30)
GCP_FLAVOR_HEADER = "Metadata-Flavor"
GCP_FLAVOR = "Google"
GCP_PREEMPTED_PATH = "/computeMetadata/v1/instance/preempted"
GCP_PROBE_PATH = "/computeMetadata/v1/instance/id"
GCP_WAIT_SECONDS = 60  # timeout_sec of one wait_for_change request
CONNECT_TIMEOUT = 1.0  # seconds: link-local answers at once, or nothing is there
READ_TIMEOUT = 5.0
RETRY_SECONDS = 5.0  # after a failed request to a service that answered before

Cloud = Literal["aws", "gcp"]
Emit = Callable[[InterruptionNotice], None]


def _timeout(read: float = READ_TIMEOUT) -> httpx.Timeout:
    return httpx.Timeout(read, connect=CONNECT_TIMEOUT)


async def detect(client: httpx.AsyncClient) -> Cloud | None:
    """Which metadata service answers at the client's base URL, if any."""
    try:
        response = await client.put(
            AWS_TOKEN_PATH, headers={AWS_TOKEN_TTL_HEADER: str(AWS_TOKEN_TTL_SECONDS)}
        )
        if response.status_code == 200 and response.text:
            return "aws"
    except httpx.HTTPError:
        return None  # nothing listens there (or it hangs): GCP would not answer either
    try:
        response = await client.get(GCP_PROBE_PATH, headers={GCP_FLAVOR_HEADER: GCP_FLAVOR})
    except httpx.HTTPError:
        return None
    if response.status_code == 200 and response.headers.get(GCP_FLAVOR_HEADER) == GCP_FLAVOR:
        return "gcp"
    return None


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class SpotWatcher:
    """Calls ``emit`` once per notice the metadata service at ``base_url`` gives.

    ``cloud`` "auto" asks which service answers; "aws"/"gcp" skip that. :meth:`run` returns
    (after one log line) when no service answers, and otherwise runs until cancelled. A failed
    request to a service that answered before is logged and retried; it never ends the watch.
    """

    def __init__(
        self,
        base_url: str,
        cloud: Literal["auto", "aws", "gcp"],
        emit: Emit,
        *,
        aws_poll_seconds: float = AWS_POLL_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cloud = cloud
        self.emit = emit
        self.aws_poll_seconds = aws_poll_seconds
        self.clock = clock
        self.watching: Cloud | None = None  # set once a service answered

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=_timeout()) as client:
            cloud = await detect(client)
            if cloud is None or (self.cloud != "auto" and cloud != self.cloud):
                wanted = "a" if self.cloud == "auto" else f"the {self.cloud.upper()}"
                log.info(
                    "spot notices: %s metadata service does not answer at %s; not watching",
                    wanted,
                    self.base_url,
                )
                return
            self.watching = cloud
            log.info("spot notices: watching the %s metadata service", cloud.upper())
            if cloud == "aws":
                await self._watch_aws(client)
            else:
                await self._watch_gcp(client)

    # ---- AWS ------------------------------------------------------------------------------------

    async def _watch_aws(self, client: httpx.AsyncClient) -> None:
        token: str | None = None
        seen: set[tuple[NoticeKind, str]] = set()
        while True:
            try:
                if token is None:
                    response = await client.put(
                        AWS_TOKEN_PATH,
                        headers={AWS_TOKEN_TTL_HEADER: str(AWS_TOKEN_TTL_SECONDS)},
                    )
                    response.raise_for_status()
                    token = response.text
                for kind, path in (
                    (NoticeKind.INTERRUPTION, AWS_INSTANCE_ACTION_PATH),
                    (NoticeKind.REBALANCE, AWS_REBALANCE_PATH),
                ):
                    response = await client.get(path, headers={AWS_TOKEN_HEADER: token})
                    if response.status_code == 401:  # the token expired
                        token = None
                        break
                    if response.status_code == 404:
                        continue
                    response.raise_for_status()
                    if (kind, response.text) in seen:
                        continue
                    seen.add((kind, response.text))
                    self.emit(self._aws_notice(kind, response.json()))
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("spot notices: AWS metadata request failed (retrying): %s", exc)
                token = None
            await asyncio.sleep(self.aws_poll_seconds)

    def _aws_notice(self, kind: NoticeKind, body: dict[str, str]) -> InterruptionNotice:
        now = self.clock()
        if kind is NoticeKind.INTERRUPTION:
            deadline: datetime | None = _parse_time(body["time"])
            detail = body["action"]
            log.warning("spot notices: AWS will %s this instance at %s", detail, deadline)
        else:
            deadline = None
            detail = f"rebalance recommendation at {body['noticeTime']}"
            log.warning("spot notices: AWS %s", detail)
        return InterruptionNotice(
            kind=kind, cloud="aws", deadline=deadline, noticed_at=now, detail=detail
        )

    # ---- GCP ------------------------------------------------------------------------------------

    async def _watch_gcp(self, client: httpx.AsyncClient) -> None:
        headers = {GCP_FLAVOR_HEADER: GCP_FLAVOR}
        etag: str | None = None
        while True:
            params: dict[str, str] = {}
            if etag is not None:
                params = {
                    "wait_for_change": "true",
                    "last_etag": etag,
                    "timeout_sec": str(GCP_WAIT_SECONDS),
                }
            try:
                response = await client.get(
                    GCP_PREEMPTED_PATH,
                    params=params,
                    headers=headers,
                    timeout=_timeout(GCP_WAIT_SECONDS + READ_TIMEOUT),
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                log.warning("spot notices: GCP metadata request failed (retrying): %s", exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            etag = response.headers.get("ETag", etag)
            if response.text.strip().upper() == "TRUE":
                now = self.clock()
                deadline = now + GCP_PREEMPTION_NOTICE
                log.warning("spot notices: GCP preempts this instance; it stops by %s", deadline)
                self.emit(
                    InterruptionNotice(
                        kind=NoticeKind.INTERRUPTION,
                        cloud="gcp",
                        deadline=deadline,
                        noticed_at=now,
                        detail="preempted",
                    )
                )
                return  # a preempted VM is not un-preempted
            if etag is None:  # a server without ETags: poll instead of spinning
                await asyncio.sleep(RETRY_SECONDS)
