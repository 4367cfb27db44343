"""The master's recent log for ``det master logs``, and the config ``det master config`` shows
without its secrets."""

from __future__ import annotations

import logging

from master.api.master_logs import REDACTED, redacted
from master.config import load_config
from master.log_buffer import MasterLogBuffer


def test_the_buffer_keeps_recent_records_with_growing_ids() -> None:
    buffer = MasterLogBuffer(keep=3)
    logger = logging.getLogger("test.master_logs")
    logger.setLevel(logging.INFO)
    logger.addHandler(buffer)
    try:
        for i in range(5):
            logger.warning("line %d", i)
    finally:
        logger.removeHandler(buffer)
    entries = buffer.entries()
    assert [e.message for e in entries] == [
        "test.master_logs: line 2",
        "test.master_logs: line 3",
        "test.master_logs: line 4",
    ]
    assert [e.id for e in entries] == [3, 4, 5] and buffer.last_id() == 5
    assert entries[0].level == "LOG_LEVEL_WARNING" and entries[0].timestamp.tzinfo
    assert [e.id for e in buffer.entries(after_id=4)] == [5]
    assert [e.id for e in buffer.entries(tail=1)] == [5]


def test_the_shown_config_has_no_secrets() -> None:
    config = load_config(
        None,
        environ={},
        agent_join_token="join-secret",
        db={"host": "db", "user": "det", "password": "db-secret", "name": "det"},
        checkpoint_storage={
            "type": "s3",
            "bucket": "b",
            "access_key": "AKIA",
            "secret_key": "s3-secret",
        },
    )
    shown = redacted(config.model_dump(mode="json"))
    text = repr(shown)
    for secret in ("join-secret", "db-secret", "s3-secret", "AKIA"):
        assert secret not in text
    assert shown["agent_join_token"] == REDACTED
    assert shown["db"]["password"] == REDACTED and shown["db"]["user"] == "det"
    assert shown["checkpoint_storage"]["bucket"] == "b"
    assert redacted({"url": "postgresql://u:pw@h/d"}) == {"url": "postgresql://u:***@h/d"}
