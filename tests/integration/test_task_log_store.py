"""The task log store's bulk writes (COPY on PostgreSQL, executemany on SQLite) and the read
path's encoder keep every character and Determined's log line shape."""

from __future__ import annotations

import asyncio
import json
from collections import namedtuple
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from master.api.tasks import LogPageEncoder, log_json
from master.db import Database, migrate
from master.logs import LOG_COLUMNS, LogStore, read_logs

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


Row = namedtuple("Row", LOG_COLUMNS)  # type: ignore[misc]


def test_the_page_encoder_writes_what_json_dumps_of_log_json_writes() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    rows = [
        Row(i, "t1", alloc, agent, when, "stdout", "INFO", source, line)
        for i, (alloc, agent, source, line) in enumerate(
            [("t1.1", "a0", "task", s) for s in AWKWARD] + [(None, None, "master", "m")], 1
        )
    ]
    expected = "".join(json.dumps({"result": log_json(r)}) + "\n" for r in rows)
    assert LogPageEncoder().encode(rows).decode() == expected
    trial = "".join(
        json.dumps({"result": {**log_json(r), "trialId": 7, "message": r.log + "\n"}}) + "\n"
        for r in rows
    )
    assert LogPageEncoder(trial_id=7).encode(rows).decode() == trial
