"""The outbox keeps messages in order and bounds buffered log lines by dropping the oldest."""

from datetime import UTC, datetime

from agent.outbox import Outbox
from agent.protocol import AllocationExited, AllocationStarted, LogBatch, LogEntry

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def batch(allocation_id: str, *lines: str) -> LogBatch:
    entries = [LogEntry(timestamp=NOW, stdtype="stdout", line=line) for line in lines]
    return LogBatch(allocation_id=allocation_id, entries=entries)


def plain(messages: list) -> list:
    """The messages without their numbers, to compare with what was put."""
    return [m.model_copy(update={"seq": 0}) for m in messages]


def drain(outbox: Outbox) -> list:
    out = []
    while (message := outbox.take()) is not None:
        out.append(message)
    return out


def test_messages_come_out_in_order_numbered_and_stay_until_acknowledged():
    outbox = Outbox()
    started = AllocationStarted(allocation_id="a", pid=1, started_at=NOW)
    exited = AllocationExited(allocation_id="a", exit_code=0, ended_at=NOW)
    outbox.put(started)
    outbox.put(batch("a", "1", "2"))
    outbox.put(exited)
    messages = drain(outbox)
    assert [m.seq for m in messages] == [1, 2, 3]
    assert [m.type for m in messages] == ["allocation_started", "log_batch", "allocation_exited"]
    assert len(outbox) == 3 and outbox.log_entries == 2  # sent, not acknowledged
    assert outbox.exited_allocations() == ["a"]
    assert outbox.ack(2) == 2
    assert len(outbox) == 1 and outbox.log_entries == 0
    outbox.ack(3)
    assert len(outbox) == 0 and outbox.exited_allocations() == []


def test_after_a_reconnect_what_the_master_lacks_goes_again_with_its_numbers():
    outbox = Outbox()
    for line in "12345":
        outbox.put(batch("a", line))
    first = drain(outbox)
    outbox.put(batch("a", "6"))
    outbox.rewind(3)  # the new welcome: the master applied 1..3
    again = drain(outbox)
    assert [m.seq for m in again] == [4, 5, 6]
    assert again[:2] == first[3:]
    assert again[2].entries[0].line == "6"
    outbox.rewind(6)
    assert len(outbox) == 0 and outbox.take() is None


def test_a_message_already_numbered_is_never_dropped_to_make_room():
    outbox = Outbox(max_log_entries=2)
    outbox.put(batch("a", "1", "2"))
    sent = drain(outbox)
    outbox.rewind(0)  # the link died before any ack
    outbox.put(batch("a", "3", "4"))  # over the cap: these go, the numbered ones stay
    outbox.put(AllocationExited(allocation_id="a", exit_code=0, ended_at=NOW))
    messages = drain(outbox)
    assert messages[0] == sent[0] and messages[0].seq == 1
    assert "2 log line(s) dropped" in messages[1].entries[0].line
    assert [m.seq for m in messages] == [1, 2, 3]


def test_past_the_cap_the_oldest_lines_go_and_one_notice_marks_the_gap():
    outbox = Outbox(max_log_entries=4)
    started = AllocationStarted(allocation_id="a", pid=1, started_at=NOW)
    exited = AllocationExited(allocation_id="a", exit_code=0, ended_at=NOW)
    outbox.put(started)
    outbox.put(batch("a", "1", "2"))
    outbox.put(batch("b", "b1"))
    outbox.put(batch("a", "3", "4", "5"))  # 6 lines: "1", "2" must go
    outbox.put(exited)
    assert outbox.log_entries == 4
    messages = plain(drain(outbox))
    assert messages[:2] == plain([started, batch("b", "b1")])  # a start is never dropped
    notice = messages[2]  # where a's gap is: just before a's next message
    assert isinstance(notice, LogBatch) and notice.allocation_id == "a"
    assert notice.entries[0].stdtype == "stderr"
    assert "2 log line(s) dropped" in notice.entries[0].line
    assert messages[3:] == plain([batch("a", "3", "4", "5"), exited])


def test_notice_precedes_the_exit_when_all_remaining_lines_were_dropped():
    outbox = Outbox(max_log_entries=2)
    outbox.put(batch("a", "1", "2"))
    exited = AllocationExited(allocation_id="a", exit_code=1, ended_at=NOW)
    outbox.put(exited)
    outbox.put(batch("b", "x", "y"))
    messages = plain(drain(outbox))
    assert "2 log line(s) dropped" in messages[0].entries[0].line
    assert messages[1:] == plain([exited, batch("b", "x", "y")])


def test_exits_still_queued_are_named_for_the_next_hello():
    outbox = Outbox()
    outbox.put(AllocationStarted(allocation_id="a", pid=1, started_at=NOW))
    outbox.put(AllocationExited(allocation_id="a", exit_code=0, ended_at=NOW))
    outbox.put(batch("b", "still running"))
    assert outbox.exited_allocations() == ["a"]
    drain(outbox)
    assert outbox.exited_allocations() == ["a"]  # sent, not acknowledged: still named
    outbox.ack(outbox.last_seq)
    assert outbox.exited_allocations() == []
