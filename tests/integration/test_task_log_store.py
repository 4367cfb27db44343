"""The task log store's bulk writes (COPY on PostgreSQL, executemany on SQLite) and the read
path's encoder keep every character and Determined's log line shape."""

from __future__ import annotations

import asyncio
import json
from collections import namedtuple
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from master.api.tasks import LogPageEncoder, log_json
from master.api.wire import timestamp
from master.db import Database, migrate
from master.logs import LOG_COLUMNS, LogStore, read_log_page, read_logs

AWKWARD = [
    "tab\there",
    "back\\slash \\N \\t",
    "carriage\rreturn",
    "new\nline inside",
    "nul \x00 byte",
    "ünïcødé ✓ 日本語",
    '"quotes" and {braces}',
    "",
]


def test_bulk_writes_keep_every_character_and_read_back_in_order(
    db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url)
    migrate(db.engine)
    store = LogStore(db)
    when = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    entries = [{"timestamp": when, "stdtype": "stderr", "line": line} for line in AWKWARD]
    try:
        asyncio.run(store.append("t1", "t1.1", "agent-0", entries))
        asyncio.run(store.master_line("t1", None, "a master line", when))
        with db.session() as session:
            rows = read_logs(session, "t1", 0, None)
            assert read_logs(session, ["t1", "other"], rows[2].id, 2) == rows[3:5]
        assert [r.log for r in rows] == [
            *(s.replace("\x00", "\ufffd") for s in AWKWARD),
            "a master line",
        ]
        assert {r.timestamp for r in rows} == {when.astimezone(UTC)}
        assert [r.source for r in rows] == ["task"] * len(AWKWARD) + ["master"]
        assert rows[0].agent_id == "agent-0" and rows[-1].allocation_id is None
        assert [r.id for r in rows] == sorted(r.id for r in rows)
    finally:
        db.close()


def test_the_fast_page_reads_what_read_logs_reads_with_the_apis_timestamp_text(
    db_url: str,
) -> None:
    db = Database(db_url)
    migrate(db.engine)
    store = LogStore(db)
    times = [
        datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),  # no fraction: still six digits
        datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ]
    entries = [{"timestamp": t, "stdtype": "stdout", "line": f"line {t}"} for t in times]
    try:
        asyncio.run(store.append("t2", "t2.1", "agent-0", entries))
        asyncio.run(store.master_line("t3", None, "another task", times[0]))
        with db.session() as session:
            slow = read_logs(session, ["t2", "t3"], 0, None)
            fast = read_log_page(session, ["t2", "t3"], 0, 100)
            assert read_log_page(session, "t2", slow[0].id, 1) == fast[1:2]
        assert fast == [(*r[:4], timestamp(r.timestamp), *r[5:]) for r in slow]
        assert [r[4] for r in fast[:3]] == [
            "2030-01-02T01:04:05.678901Z",
            "2030-01-02T03:04:05.000000Z",
            "0999-12-31T23:59:59.000001Z",
        ]
    finally:
        db.close()


Row = namedtuple("Row", LOG_COLUMNS)  # type: ignore[misc]


def test_the_page_encoder_writes_what_json_dumps_of_log_json_writes() -> None:
    when = timestamp(datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    rows = [
        Row(i, "t1", alloc, agent, when, "stdout", "INFO", source, line)
        for i, (alloc, agent, source, line) in enumerate(
            [("t1.1", "a0", "task", s) for s in AWKWARD] + [(None, None, "master", "m")], 1
        )
    ]
    # log_json formats the timestamp itself: give it the datetime the text stands for.
    as_stored = [r._replace(timestamp=datetime.fromisoformat(r.timestamp)) for r in rows]
    expected = "".join(json.dumps({"result": log_json(r)}) + "\n" for r in as_stored)
    assert LogPageEncoder().encode(rows).decode() == expected
    trial = "".join(
        json.dumps({"result": {**log_json(r), "trialId": 7, "message": r.log + "\n"}}) + "\n"
        for r in as_stored
    )
    assert LogPageEncoder(trial_id=7).encode(rows).decode() == trial
