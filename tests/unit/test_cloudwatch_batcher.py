"""The batcher's promises, checked against PutLogEvents' limits (moto does not enforce them)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cloudwatch.batcher import (
    CLOCK_MARGIN_MS,
    DAY_MS,
    EMPTY_MESSAGE,
    EVENT_OVERHEAD_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_BATCH_SPAN_MS,
    MAX_EVENT_AGE_MS,
    MAX_EVENT_AHEAD_MS,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    REORDER_TOLERANCE_MS,
    TRUNCATION_MARKER,
    Assembly,
    Rejection,
    assemble,
    fit_message,
    max_age_ms,
    rejected_count,
)

NOW = 1_800_000_000_000  # ms
HOUR = 60 * 60 * 1000


def utf8(text: str) -> int:
    return len(text.encode())


def check_limits(assembly: Assembly, now: int, max_age: int) -> None:
    for batch in assembly.batches:
        events = batch.events
        assert 1 <= len(events) <= MAX_BATCH_EVENTS
        size = sum(utf8(e["message"]) + EVENT_OVERHEAD_BYTES for e in events)
        assert size == batch.size <= MAX_BATCH_BYTES
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps), "events must be in chronological order"
        assert stamps[-1] - stamps[0] < MAX_BATCH_SPAN_MS
        assert now - max_age <= stamps[0] and stamps[-1] <= now + MAX_EVENT_AHEAD_MS
        for event in events:
            assert 1 <= utf8(event["message"]) <= MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES


def check_nothing_lost(assembly: Assembly, events: list[tuple[int, str]]) -> None:
    rejected = {r.index for r in assembly.rejected}
    kept = [(i, e) for i, e in enumerate(events) if i not in rejected]
    shipped = [e for batch in assembly.batches for e in batch.events]
    assert len(shipped) == len(kept), "every event is shipped or rejected, exactly once"
    for (_, (timestamp, message)), event in zip(kept, shipped, strict=True):
        assert event["message"] == fit_message(message)[0], "order and content are kept"
        assert timestamp <= event["timestamp"] <= timestamp + REORDER_TOLERANCE_MS
    for r in assembly.rejected:
        assert r.timestamp == events[r.index][0]
    consumed = [batch.consumed for batch in assembly.batches]
    assert consumed == sorted(consumed) and len(set(consumed)) == len(consumed)
    if assembly.batches:
        last_kept = kept[-1][0]
        assert assembly.batches[-1].consumed == last_kept + 1


# Sizes cluster around the limits: tiny lines, lines near the event cap, lines over it.
sizes = st.one_of(
    st.integers(0, 200),
    st.integers(MAX_MESSAGE_BYTES - 100, MAX_MESSAGE_BYTES + 100),
    st.integers(0, 3 * MAX_MESSAGE_BYTES),
)
chars = st.sampled_from(["a", "é", "€", "😀", "\n"])
messages = st.one_of(
    st.text(max_size=50),
    st.builds(lambda char, size: char * (size // utf8(char)), chars, sizes),
)
# Timestamps: mostly near now and slightly disordered, sometimes far in the past or future.
offsets = st.one_of(
    st.integers(-5_000, 5_000),
    st.integers(-3 * DAY_MS, 0),
    st.integers(-MAX_EVENT_AGE_MS - DAY_MS, MAX_EVENT_AHEAD_MS + HOUR),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(offsets, messages), max_size=60), st.sampled_from([None, 1, 7, 30]))
def test_random_events_never_make_a_batch_that_breaks_a_limit(
    raw: list[tuple[int, str]], retention: int | None
) -> None:
    events = [(NOW + offset, message) for offset, message in raw]
    max_age = max_age_ms(retention)
    assembly = assemble("s", events, NOW, max_age)
    check_limits(assembly, NOW, max_age)
    check_nothing_lost(assembly, events)
    for r in assembly.rejected:
        too_old = r.timestamp < NOW - max_age
        assert r.reason == (Rejection.TOO_OLD if too_old else Rejection.TOO_NEW)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30_000), st.integers(0, 120), st.integers(0, 3))
def test_many_events_split_by_count_and_bytes(count: int, size: int, step_ms: int) -> None:
    events = [(NOW - count * step_ms + i * step_ms, "x" * size) for i in range(count)]
    assembly = assemble("s", events, NOW)
    check_limits(assembly, NOW, max_age_ms(None))
    check_nothing_lost(assembly, events)


def test_a_full_batch_is_exactly_at_the_byte_limit_and_not_over() -> None:
    message_bytes = MAX_BATCH_BYTES // 4 - EVENT_OVERHEAD_BYTES
    events = [(NOW, "x" * message_bytes)] * 5
    batches = assemble("s", events, NOW).batches
    assert [len(b.events) for b in batches] == [4, 1]
    assert batches[0].size == MAX_BATCH_BYTES


def test_one_byte_over_the_batch_limit_starts_a_new_batch() -> None:
    big = "x" * (MAX_MESSAGE_BYTES - 10)  # four of them leave 40 bytes: one 14-byte message
    fits = assemble("s", [(NOW, big)] * 4 + [(NOW, "y" * 14)], NOW).batches
    assert [len(b.events) for b in fits] == [5] and fits[0].size == MAX_BATCH_BYTES
    over = assemble("s", [(NOW, big)] * 4 + [(NOW, "y" * 15)], NOW).batches
    assert [len(b.events) for b in over] == [4, 1]


def test_ten_thousand_events_per_batch_at_most() -> None:
    batches = assemble("s", [(NOW, "x")] * (MAX_BATCH_EVENTS + 1), NOW).batches
    assert [len(b.events) for b in batches] == [MAX_BATCH_EVENTS, 1]


def test_a_batch_spans_less_than_24_hours() -> None:
    start = NOW - 2 * DAY_MS
    events = [(start, "a"), (start + MAX_BATCH_SPAN_MS - 1, "b"), (start + MAX_BATCH_SPAN_MS, "c")]
    batches = assemble("s", events, NOW).batches
    assert [[e["message"] for e in b.events] for b in batches] == [["a", "b"], ["c"]]


def test_small_step_back_is_raised_large_one_starts_a_new_batch() -> None:
    events = [(NOW, "a"), (NOW - REORDER_TOLERANCE_MS, "b"), (NOW - REORDER_TOLERANCE_MS - 1, "c")]
    batches = assemble("s", events, NOW).batches
    assert [[(e["timestamp"], e["message"]) for e in b.events] for b in batches] == [
        [(NOW, "a"), (NOW, "b")],
        [(NOW - REORDER_TOLERANCE_MS - 1, "c")],
    ]
    assert [b.consumed for b in batches] == [2, 3]


def test_too_old_and_too_new_events_are_left_out_and_reported() -> None:
    old = NOW - MAX_EVENT_AGE_MS + CLOCK_MARGIN_MS - 1
    new = NOW + MAX_EVENT_AHEAD_MS - CLOCK_MARGIN_MS + 1
    assembly = assemble("s", [(old, "old"), (NOW, "now"), (new, "new")], NOW)
    assert [e["message"] for b in assembly.batches for e in b.events] == ["now"]
    assert [(r.index, r.reason) for r in assembly.rejected] == [
        (0, Rejection.TOO_OLD),
        (2, Rejection.TOO_NEW),
    ]


def test_retention_shorter_than_14_days_limits_the_age() -> None:
    assert max_age_ms(1) == DAY_MS - CLOCK_MARGIN_MS
    assert max_age_ms(30) == max_age_ms(None) == MAX_EVENT_AGE_MS - CLOCK_MARGIN_MS
    two_days_ago = [(NOW - 2 * DAY_MS, "x")]
    assert assemble("s", two_days_ago, NOW, max_age_ms(1)).rejected
    assert not assemble("s", two_days_ago, NOW, max_age_ms(7)).rejected


def test_long_message_is_cut_on_a_character_boundary_with_a_marker() -> None:
    message, size, cut = fit_message("€" * MAX_MESSAGE_BYTES)
    assert cut and message.endswith(TRUNCATION_MARKER)
    assert size == utf8(message) <= MAX_MESSAGE_BYTES
    assert set(message.removesuffix(TRUNCATION_MARKER)) == {"€"}
    exact = "x" * MAX_MESSAGE_BYTES
    assert fit_message(exact) == (exact, MAX_MESSAGE_BYTES, False)
    assert assemble("s", [(NOW, "y" * MAX_EVENT_BYTES)], NOW).truncated == 1


def test_empty_lines_and_lone_surrogates_become_valid_messages() -> None:
    assert fit_message("") == (EMPTY_MESSAGE, 1, False)
    message, size, _ = fit_message("bad \udcff byte")
    assert message == "bad ? byte" and size == utf8(message)


def test_rejected_count_reads_rejected_log_events_info() -> None:
    assert rejected_count(10, None) == 0
    assert rejected_count(10, {"tooOldLogEventEndIndex": 3}) == 3
    assert rejected_count(10, {"tooNewLogEventStartIndex": 7}) == 3
    assert rejected_count(10, {"expiredLogEventEndIndex": 2, "tooNewLogEventStartIndex": 9}) == 3
    assert rejected_count(10, {"tooOldLogEventEndIndex": 10, "tooNewLogEventStartIndex": 5}) == 10
