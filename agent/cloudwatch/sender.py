"""Puts batches into one log group: creates the group and streams, retries, counts.

How CloudWatch Logs behaves beyond the batch limits (see :mod:`agent.cloudwatch.batcher`):

- PutLogEvents is throttled per account and region (``ThrottlingException``); 5xx answers and
  network errors are transient. We retry forever with exponential backoff and equal jitter
  while the spool holds the lines. Errors that need a person (``AccessDeniedException``, bad
  credentials) are retried the same way and logged at most once a minute, so fixing IAM
  resumes shipping.
- A stream must exist before PutLogEvents (``ResourceNotFoundException`` otherwise) and the
  group before the stream; creating one that exists answers ``ResourceAlreadyExistsException``.
  Streams are created once per process, and again when a put says they are gone (an admin or
  a retention job deleted them). The group's owner (the master) creates it and sets its
  retention at start; anyone else creates it only when a stream cannot be made without it.
- ``InvalidParameterException`` means the batch itself can never be accepted. The batcher
  makes that impossible; if it happens anyway the batch is dropped, counted and logged rather
  than blocking every line behind it.
- A call that fails on the wire after CloudWatch stored the batch cannot be told from one that
  failed before: its retry stores the batch twice. Refused calls (throttling, 5xx answers) are
  never duplicated.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from agent.cloudwatch.batcher import Batch, rejected_count
from agent.cloudwatch.client import error_code

log = logging.getLogger(__name__)

RETRY_BASE_DELAY = 0.2  # seconds; doubles per failed attempt
RETRY_MAX_DELAY = 30.0
FAILURE_LOG_INTERVAL = 60.0  # seconds between warnings while calls keep failing
NEVER_ACCEPTED = "InvalidParameterException"
ALREADY_EXISTS = "ResourceAlreadyExistsException"
NOT_FOUND = "ResourceNotFoundException"
ACCESS_DENIED = "AccessDeniedException"


@dataclass
class Counters:
    """Lines (log events) since this process started, by what happened to them."""

    shipped: int = 0  # accepted by CloudWatch
    retried: int = 0  # sent again after a failed attempt (one line retried twice counts 2)
    dropped: int = 0  # CloudWatch can never accept them (too old, too far ahead, invalid)
    truncated: int = 0  # cut to 256 KB and shipped with a marker
    lost: int = 0  # never reached the spool or were pushed out of it (queue/spool/disk full)


class Abandoned(Exception):
    """The stop deadline passed; what is not shipped stays in the spool."""


class Stop:
    """A stop request with a deadline, and sleeps that end early because of it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.deadline = float("inf")

    def request(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.event.set()

    def requested(self) -> bool:
        return self.event.is_set()

    def pause(self, delay: float) -> None:
        """Sleep ``delay``; once stopping, raise :class:`Abandoned` instead of sleeping past
        the deadline."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if self.event.is_set():
                if end >= self.deadline:
                    raise Abandoned
                time.sleep(left)
                return
            self.event.wait(left)


class Sender:
    """Delivers batches to ``log_group`` (a name, or a callable asked until it answers)."""

    def __init__(
        self,
        client: Any,
        log_group: str | Callable[[], str],
        retention_days: int | None,
        owns_group: bool,
        counters: Counters,
        stop: Stop,
    ) -> None:
        self.client = client
        self.retention_days = retention_days
        self.counters = counters
        self.log_group = log_group if isinstance(log_group, str) else None
        self._group_source = log_group
        self._owns_group = owns_group
        self._group_ready = False
        self._streams: set[str] = set()
        self._stop = stop
        self._failing_since: float | None = None
        self._failure_logged = 0.0

    def put(self, batch: Batch) -> None:
        """Deliver ``batch``, retrying until CloudWatch answers for good; raises
        :class:`Abandoned` when the stop deadline passes first."""
        attempt = 0
        count = len(batch.events)
        while True:
            try:
                if batch.stream not in self._streams:
                    self._create_stream(batch.stream)
                response = self.client.put_log_events(
                    logGroupName=self.log_group, logStreamName=batch.stream, logEvents=batch.events
                )
            except (ClientError, BotoCoreError) as e:
                code = error_code(e)
                if code == NEVER_ACCEPTED:
                    self.counters.dropped += count
                    log.error("CloudWatch refused %d line(s) for %s: %s", count, batch.stream, e)
                    return
                if code == NOT_FOUND:
                    self._streams.discard(batch.stream)
                self.counters.retried += count
                self._failed(f"PutLogEvents for {batch.stream}", e, attempt)
                attempt += 1
                continue
            rejected = rejected_count(count, response.get("rejectedLogEventsInfo"))
            if rejected:
                log.warning(
                    "CloudWatch rejected %d line(s) for %s as too old or too new: %s",
                    rejected,
                    batch.stream,
                    response["rejectedLogEventsInfo"],
                )
            self.counters.dropped += rejected
            self.counters.shipped += count - rejected
            self._recovered()
            return

    def ensure_group(self) -> None:
        """Know the group's name and, for its owner, create it and set its retention."""
        attempt = 0
        while self.log_group is None:
            try:
                assert callable(self._group_source)
                self.log_group = self._group_source()
            except Exception as e:
                self._failed("naming the log group", e, attempt)
                attempt += 1
        while self._owns_group and not self._group_ready:
            try:
                self._create_group()
            except (ClientError, BotoCoreError) as e:
                if error_code(e) == ACCESS_DENIED:  # e.g. a group made by infra, kept as is
                    log.warning("cannot create or configure log group %s: %s", self.log_group, e)
                    break
                self._failed(f"creating log group {self.log_group}", e, attempt)
                attempt += 1
        self._group_ready = True

    def _create_group(self) -> None:
        try:
            self.client.create_log_group(logGroupName=self.log_group)
            log.info("created CloudWatch log group %s", self.log_group)
        except ClientError as e:
            if error_code(e) != ALREADY_EXISTS:
                raise
        if self.retention_days is not None:
            self.client.put_retention_policy(
                logGroupName=self.log_group, retentionInDays=self.retention_days
            )
        self._group_ready = True

    def _create_stream(self, stream: str) -> None:
        try:
            self.client.create_log_stream(logGroupName=self.log_group, logStreamName=stream)
        except ClientError as e:
            code = error_code(e)
            if code == NOT_FOUND:  # the group is gone or not created yet
                self._create_group()
                self.client.create_log_stream(logGroupName=self.log_group, logStreamName=stream)
            elif code != ALREADY_EXISTS:
                raise
        self._streams.add(stream)

    def _failed(self, what: str, error: Exception, attempt: int) -> None:
        """Log (at most once a minute while failing) and sleep the backoff for ``attempt``."""
        delay = min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2**attempt)
        delay = delay / 2 + random.uniform(0, delay / 2)
        now = time.monotonic()
        if self._failing_since is None or now - self._failure_logged >= FAILURE_LOG_INTERVAL:
            log.warning(
                "CloudWatch: %s failed (%s: %s); retrying in %.1fs, lines wait in the spool",
                what,
                error_code(error),
                " ".join(str(error).split())[:300],
                delay,
            )
            self._failure_logged = now
        if self._failing_since is None:
            self._failing_since = now
        self._stop.pause(delay)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "CloudWatch accepts lines again after %.1fs of failures",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
