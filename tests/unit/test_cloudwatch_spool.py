"""The CloudWatch spool: lines stay on disk until committed, across reopening and damage."""

from __future__ import annotations

from pathlib import Path

from agent.cloudwatch.spool import CURSOR_FILE, Position, Spool


def lines(prefix: str, count: int, start: int = 0) -> list[tuple[int, str]]:
    return [(1000 + i, f"{prefix}{i}") for i in range(start, start + count)]


def messages(spool: Spool, position: Position | None = None) -> dict[str, list[str]]:
    chunk = spool.read(position or spool.cursor.position, 1 << 30, 1 << 30)
    return {stream: [m for _, m in found] for stream, found in chunk.streams.items()}


def test_lines_read_back_by_stream_in_order_until_committed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"a": lines("a", 3), "b": lines("b", 1)})
    spool.append({"a": lines("a", 2, start=3)})
    chunk = spool.read(spool.cursor.position, 1000, 1 << 20)
    assert chunk.count == 6
    assert {s: [m for _, m in found] for s, found in chunk.streams.items()} == {
        "a": ["a0", "a1", "a2", "a3", "a4"],
        "b": ["b0"],
    }
    assert messages(spool) == messages(Spool(tmp_path))  # nothing committed: all still there
    spool.commit(chunk.end)
    assert not spool.has_unread(chunk.end)
    spool.append({"a": lines("a", 1, start=5)})
    assert messages(spool) == {"a": ["a5"]}


def test_reading_stops_at_the_line_limit_on_a_frame_boundary(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for n in range(5):
        spool.append({"s": lines("s", 2, start=2 * n)})
    first = spool.read(spool.cursor.position, 3, 1 << 20)
    assert first.count == 4  # whole frames: two of two lines
    second = spool.read(first.end, 1000, 1 << 20)
    assert [m for _, m in second.streams["s"]] == [f"s{i}" for i in range(4, 10)]


def test_a_reopened_spool_resumes_at_the_cursor_and_writes_a_new_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"s": lines("s", 2)})
    spool.commit(spool.read(spool.cursor.position, 1, 1 << 20).end)
    spool.append({"s": lines("s", 2, start=2)})
    spool.close()
    reopened = Spool(tmp_path)
    reopened.append({"s": lines("s", 1, start=4)})
    assert messages(reopened) == {"s": ["s2", "s3", "s4"]}
    assert len(list(tmp_path.glob("*.spool"))) == 2


def test_used_segments_are_deleted_on_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=40)  # a frame per segment
    for n in range(6):
        spool.append({"s": lines("s", 3, start=3 * n)})
    assert len(list(tmp_path.glob("*.spool"))) == 6
    spool.commit(spool.read(spool.cursor.position, 1 << 30, 1 << 30).end)
    assert len(list(tmp_path.glob("*.spool"))) == 1  # the one still being written


def test_a_torn_frame_from_a_crash_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"s": lines("s", 2)})
    spool.close()
    segment = next(tmp_path.glob("*.spool"))
    with segment.open("ab") as f:
        f.write(b'{"s":[[1,"half')  # killed in the middle of a write
    reopened = Spool(tmp_path)
    reopened.append({"s": lines("s", 1, start=2)})
    assert messages(reopened) == {"s": ["s0", "s1", "s2"]}
    assert reopened.torn_frames == 1


def test_progress_inside_a_chunk_survives_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"a": lines("a", 3), "b": lines("b", 3)})
    chunk = spool.read(spool.cursor.position, 1000, 1 << 20)
    spool.save_progress(chunk.end, {"a": 3, "b": 1})
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.cursor.chunk_end == chunk.end
    assert reopened.cursor.progress == {"a": 3, "b": 1}
    again = reopened.read(reopened.cursor.position, 1, 1, end=reopened.cursor.chunk_end)
    assert again.count == 6 and again.end == chunk.end


def test_a_full_spool_drops_its_oldest_segment_and_counts_the_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=600, segment_bytes=150)
    lost = 0
    for n in range(20):
        lost += spool.append({"s": lines("s", 5, start=5 * n)})[1]
    kept = messages(spool)["s"]
    assert lost > 0 and len(kept) + lost == 100
    assert kept == [f"s{i}" for i in range(100 - len(kept), 100)]  # the newest are kept
    assert sum(p.stat().st_size for p in tmp_path.glob("*.spool")) <= 600


def test_an_unreadable_cursor_means_shipping_everything_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"s": lines("s", 2)})
    spool.commit(spool.read(spool.cursor.position, 1000, 1 << 20).end)
    spool.close()
    (tmp_path / CURSOR_FILE).write_text("{not json")
    assert Spool(tmp_path).cursor.position == Position(0, 0)
