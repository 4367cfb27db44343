"""Batches that PutLogEvents accepts: pure functions, no I/O, an explicit ``now``.

How CloudWatch Logs really behaves (API reference of PutLogEvents, and what we do about it):

- A request carries events for one stream. Its size is the sum of the UTF-8 bytes of the
  messages plus 26 bytes per event, at most 1,048,576; at most 10,000 events; the timestamps
  (milliseconds since the epoch) must be in chronological order and span at most 24 hours.
  Breaking any of these fails the whole request with ``InvalidParameterException``, so the
  batcher never builds such a batch: it closes a batch when the next event would cross a limit.
- Events more than 2 hours in the future, more than 14 days in the past, or older than the
  group's retention are rejected one by one (``rejectedLogEventsInfo``) while the rest are
  stored. They can never be accepted, so the batcher leaves them out and reports them.
- An event is at most 256 KB (newer regions document 1 MB; we keep to the lower figure that
  holds everywhere). Longer messages are cut at a character boundary and end with
  :data:`TRUNCATION_MARKER`. A message must be at least one character, so an empty line is
  sent as :data:`EMPTY_MESSAGE`.
- The sequence token is ignored and batches of one stream may arrive in any order; only the
  order inside a batch matters. Lines from several threads can carry timestamps a few
  milliseconds out of order: a step back of at most :data:`REORDER_TOLERANCE_MS` is raised to
  the previous timestamp (the line keeps its place); a larger one closes the batch, so every
  event keeps its own time and its place in the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypedDict

# "The maximum batch size is 1,048,576 bytes. This size is calculated as the sum of all event
# messages in UTF-8, plus 26 bytes for each log event."
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
# "The maximum number of log events in a batch is 10,000."
MAX_BATCH_EVENTS = 10_000
# "A batch of log events in a single request cannot span more than 24 hours."
MAX_BATCH_SPAN_MS = 24 * 60 * 60 * 1000
# "None of the log events in the batch can be more than 14 days in the past. Also, none of the
# log events can be from earlier than the retention period of the log group."
MAX_EVENT_AGE_MS = 14 * 24 * 60 * 60 * 1000
# "None of the log events in the batch can be more than 2 hours in the future."
MAX_EVENT_AHEAD_MS = 2 * 60 * 60 * 1000
# "Each log event can be no larger than 256 KB." (1 MB in the newest API reference)
MAX_EVENT_BYTES = 256 * 1024
# EventMessage: "min": 1
EMPTY_MESSAGE = " "
# "The log events in the batch must be in chronological order by their timestamp."
REORDER_TOLERANCE_MS = 1000

# Our margin against clock skew between this machine and AWS at the age and future limits.
CLOCK_MARGIN_MS = 60 * 1000
MAX_MESSAGE_BYTES = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES
TRUNCATION_MARKER = " [truncated by flotilla: event over 256 KB]"
_MARKER_BYTES = len(TRUNCATION_MARKER.encode())
DAY_MS = 24 * 60 * 60 * 1000


class InputLogEvent(TypedDict):
    """One element of PutLogEvents' ``logEvents``."""

    timestamp: int
    message: str


class Rejection(StrEnum):
    TOO_OLD = "older than 14 days or the log group's retention"
    TOO_NEW = "more than 2 hours in the future"


@dataclass(slots=True)
class Batch:
    """One PutLogEvents request's events, within every limit above.

    ``consumed`` counts the stream's input events up to and including this batch's last one
    (left-out events among them too), so a shipper that stops after sending this batch knows
    where to resume.
    """

    stream: str
    events: list[InputLogEvent]
    size: int
    consumed: int


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int  # position in the stream's input
    timestamp: int
    reason: Rejection


@dataclass(slots=True)
class Assembly:
    batches: list[Batch] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    truncated: int = 0


def max_age_ms(retention_days: int | None) -> int:
    """How old an event may be: 14 days, or less when the group keeps events for less."""
    limit = MAX_EVENT_AGE_MS
    if retention_days is not None:
        limit = min(limit, retention_days * DAY_MS)
    return limit - CLOCK_MARGIN_MS


def fit_message(message: str) -> tuple[str, int, bool]:
    """``(message, its UTF-8 size, whether it was cut)`` for a message CloudWatch accepts:
    non-empty, valid UTF-8, at most :data:`MAX_MESSAGE_BYTES` bytes."""
    if not message:
        return EMPTY_MESSAGE, len(EMPTY_MESSAGE), False
    if message.isascii():
        size = len(message)
        if size <= MAX_MESSAGE_BYTES:
            return message, size, False
        data = message.encode()
    else:
        try:
            data = message.encode()
        except UnicodeEncodeError:  # lone surrogates, e.g. from surrogateescape decoding
            data = message.encode("utf-8", "replace")
            message = data.decode()
        if len(data) <= MAX_MESSAGE_BYTES:
            return message, len(data), False
    kept = data[: MAX_MESSAGE_BYTES - _MARKER_BYTES].decode("utf-8", "ignore")
    cut = kept + TRUNCATION_MARKER
    return cut, len(cut.encode()), True


def assemble(
    stream: str,
    events: Sequence[tuple[int, str]],
    now_ms: int,
    max_age: int = MAX_EVENT_AGE_MS - CLOCK_MARGIN_MS,
) -> Assembly:
    """Turn one stream's ``(timestamp ms, message)`` events, in the order they were logged,
    into batches PutLogEvents accepts at ``now_ms``.

    Promises: every event is either in exactly one batch, in input order, or in ``rejected``;
    no batch breaks a limit of the module docstring; timestamps are never lowered and are
    raised by at most :data:`REORDER_TOLERANCE_MS`.
    """
    oldest = now_ms - max_age
    newest = now_ms + MAX_EVENT_AHEAD_MS - CLOCK_MARGIN_MS
    result = Assembly()
    current: list[InputLogEvent] = []
    size = first = last = 0
    last_index = -1

    def close(consumed: int) -> None:
        result.batches.append(Batch(stream, current, size, consumed))

    for index, (timestamp, raw) in enumerate(events):
        if timestamp < oldest or timestamp > newest:
            reason = Rejection.TOO_OLD if timestamp < oldest else Rejection.TOO_NEW
            result.rejected.append(Rejected(index, timestamp, reason))
            continue
        message, message_size, cut = fit_message(raw)
        result.truncated += cut
        event_size = message_size + EVENT_OVERHEAD_BYTES
        if current:
            if last - REORDER_TOLERANCE_MS <= timestamp < last:
                timestamp = last
            if (
                timestamp < last
                or len(current) >= MAX_BATCH_EVENTS
                or size + event_size > MAX_BATCH_BYTES
                or timestamp - first >= MAX_BATCH_SPAN_MS
            ):
                close(consumed=last_index + 1)
                current = []
        if not current:
            size = 0
            first = timestamp
        current.append({"timestamp": timestamp, "message": message})
        size += event_size
        last = timestamp
        last_index = index
    if current:
        close(consumed=last_index + 1)
    return result


def rejected_count(batch_size: int, info: dict[str, int] | None) -> int:
    """How many events of a sent batch CloudWatch refused, from ``rejectedLogEventsInfo``
    (``tooOldLogEventEndIndex`` and ``expiredLogEventEndIndex`` end before, exclusive;
    ``tooNewLogEventStartIndex`` starts at, inclusive)."""
    if not info:
        return 0
    head = max(info.get("tooOldLogEventEndIndex", 0), info.get("expiredLogEventEndIndex", 0))
    tail_start = info.get("tooNewLogEventStartIndex", batch_size)
    return min(batch_size, head + max(0, batch_size - max(tail_start, head)))
