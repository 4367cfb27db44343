"""The outbox keeps messages in order and bounds buffered log lines by dropping the oldest."""

from datetime import UTC, datetime

from agent.outbox import Outbox
from agent.protocol import AllocationExited, AllocationStarted, LogBatch, LogEntry

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def batch(allocation_id: str, *lines: str) -> LogBatch:
    entries = [LogEntry(timestamp=NOW, stdtype="stdout", line=line) for line in lines]
    return LogBatch(allocation_id=allocation_id, entries=entries)


def drain(outbox: Outbox) -> list:
    out = []
    while (message := outbox.take()) is not None:
        out.append(message)
    return out


def test_messages_come_out_in_order_and_a_failed_send_goes_first_again():
    outbox = Outbox()
    started = AllocationStarted(allocation_id="a", pid=1, started_at=NOW)
    exited = AllocationExited(allocation_id="a", exit_code=0, ended_at=NOW)
    outbox.put(started)
    outbox.put(batch("a", "1", "2"))
    outbox.put(exited)
    first = outbox.take()
    outbox.give_back(first)
    assert drain(outbox) == [started, batch("a", "1", "2"), exited]
    assert outbox.log_entries == 0


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
    messages = drain(outbox)
    assert messages[:2] == [started, batch("b", "b1")]  # a start is never dropped
    notice = messages[2]  # where a's gap is: just before a's next message
    assert isinstance(notice, LogBatch) and notice.allocation_id == "a"
    assert notice.entries[0].stdtype == "stderr"
    assert "2 log line(s) dropped" in notice.entries[0].line
    assert messages[3:] == [batch("a", "3", "4", "5"), exited]


def test_notice_precedes_the_exit_when_all_remaining_lines_were_dropped():
    outbox = Outbox(max_log_entries=2)
    outbox.put(batch("a", "1", "2"))
    exited = AllocationExited(allocation_id="a", exit_code=1, ended_at=NOW)
    outbox.put(exited)
    outbox.put(batch("b", "x", "y"))
    messages = drain(outbox)
    assert "2 log line(s) dropped" in messages[0].entries[0].line
    assert messages[1:] == [exited, batch("b", "x", "y")]


def test_exits_still_queued_are_named_for_the_next_hello():
    outbox = Outbox()
    outbox.put(AllocationStarted(allocation_id="a", pid=1, started_at=NOW))
    outbox.put(AllocationExited(allocation_id="a", exit_code=0, ended_at=NOW))
    outbox.put(batch("b", "still running"))
    assert outbox.exited_allocations() == ["a"]
    drain(outbox)
    assert outbox.exited_allocations() == []
