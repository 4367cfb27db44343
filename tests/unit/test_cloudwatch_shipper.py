"""The CloudWatch shipper against a moto server: order, retries, recreation, stops, drops."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.serialize import JSONSerializer

from agent.cloudwatch import faults, shipper
from agent.cloudwatch.batcher import DAY_MS, MAX_BATCH_EVENTS
from agent.cloudwatch.client import logs_client
from agent.cloudwatch.handler import CloudWatchHandler
from agent.cloudwatch.shipper import Shipper
from agent.cloudwatch.spool import Spool
from tests.moto_logs import CREDENTIALS, REGION, logs_reader, moto_server, stream_messages

FLUSH = 60.0


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        with moto_server() as url:
            yield url


@pytest.fixture
def group(request: pytest.FixtureRequest) -> str:
    return f"/flotilla/test/{request.node.name}"


def now_ms() -> int:
    return int(time.time() * 1000)


def make_shipper(endpoint: str, spool: Path, group: Any, owns_group: bool = True) -> Shipper:
    client = logs_client(REGION, endpoint)
    return Shipper(Spool(spool), client, group, retention_days=7, owns_group=owns_group)


def hook(client: Any, fail: Any) -> None:
    """Answer PutLogEvents calls for which ``fail(params)`` names an error code with it."""

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        code = fail(json.loads(params["body"]))
        if code is None:
            return None
        error = {"Error": {"Code": code, "Message": "injected"}}
        return AWSResponse("", 400, {}, None), error

    client.meta.events.register("before-call.logs.PutLogEvents", before_call)


def test_lines_arrive_in_order_in_their_streams_and_the_group_gets_its_retention(
    endpoint: str, group: str, tmp_path: Path
) -> None:
    ship = make_shipper(endpoint, tmp_path, group)
    ship.start()
    lines = [(now_ms(), f"line {i}") for i in range(25_000)]  # three batches
    assert ship.submit_many("master", lines) == len(lines)
    ship.submit("agent/a-1", now_ms(), "hello")
    assert ship.flush(FLUSH)
    ship.stop()
    reader = logs_reader(endpoint)
    assert stream_messages(reader, group, "master") == [m for _, m in lines]
    assert stream_messages(reader, group, "agent/a-1") == ["hello"]
    (described,) = reader.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert described["retentionInDays"] == 7
    assert (ship.counters.shipped, ship.counters.retried, ship.counters.lost) == (25_001, 0, 0)


def test_throttled_puts_are_retried_and_every_line_arrives_once(
    endpoint: str, group: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(faults.THROTTLES_ENV, "4")
    ship = make_shipper(endpoint, tmp_path, group)
    ship.start()
    lines = [(now_ms(), f"line {i}") for i in range(2 * MAX_BATCH_EVENTS + 5)]
    ship.submit_many("s", lines)
    assert ship.flush(FLUSH)
    ship.stop()
    assert stream_messages(logs_reader(endpoint), group, "s") == [m for _, m in lines]
    assert ship.counters.shipped == len(lines)
    assert ship.counters.retried >= 4  # at least one line per throttled call


def test_a_deleted_stream_is_created_again(endpoint: str, group: str, tmp_path: Path) -> None:
    ship = make_shipper(endpoint, tmp_path, group)
    ship.start()
    ship.submit("s", now_ms(), "before")
    assert ship.flush(FLUSH)
    reader = logs_reader(endpoint)
    reader.delete_log_stream(logGroupName=group, logStreamName="s")
    ship.submit("s", now_ms(), "after")
    assert ship.flush(FLUSH)
    ship.stop()
    assert stream_messages(reader, group, "s") == ["after"]
    assert ship.counters.retried == 1


def test_an_agent_creates_a_missing_group_and_learns_its_name_late(
    endpoint: str, group: str, tmp_path: Path
) -> None:
    answers = iter([RuntimeError("master not up yet"), group])

    def name() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    ship = make_shipper(endpoint, tmp_path, name, owns_group=False)
    ship.start()
    ship.submit("agent/a-1", now_ms(), "spooled while the name was unknown")
    assert ship.flush(FLUSH)
    ship.stop()
    assert stream_messages(logs_reader(endpoint), group, "agent/a-1") == [
        "spooled while the name was unknown"
    ]


def test_what_a_stop_leaves_behind_is_shipped_once_by_the_next_shipper(
    endpoint: str, group: str, tmp_path: Path
) -> None:
    first = make_shipper(endpoint, tmp_path, group)
    hook(first.client, lambda body: "ThrottlingException" if body["logStreamName"] == "b" else None)
    first.start()
    a_lines = [(now_ms(), f"a{i}") for i in range(5)]
    b_lines = [(now_ms(), f"b{i}") for i in range(5)]
    first.submit_many("a", a_lines)
    first.submit_many("b", b_lines)
    assert not first.flush(1.0)  # "b" is throttled for good
    first.stop(timeout=0.5)
    reader = logs_reader(endpoint)
    assert stream_messages(reader, group, "a") == [m for _, m in a_lines]
    assert stream_messages(reader, group, "b") == []
    assert first.spool.cursor.progress == {"a": 5}  # the chunk is half shipped

    second = make_shipper(endpoint, tmp_path, group)
    second.start()
    assert second.flush(FLUSH)
    second.stop()
    assert stream_messages(reader, group, "a") == [m for _, m in a_lines]  # not twice
    assert stream_messages(reader, group, "b") == [m for _, m in b_lines]


def test_lines_cloudwatch_can_never_accept_are_dropped_counted_and_logged(
    endpoint: str, group: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ship = make_shipper(endpoint, tmp_path, group)
    invalid = {"count": 1}

    def once(body: dict[str, Any]) -> str | None:
        if body["logEvents"][0]["message"] == "refused" and invalid["count"]:
            invalid["count"] -= 1
            return "InvalidParameterException"
        return None

    hook(ship.client, once)
    ship.start()
    ship.submit("s", now_ms() - 15 * DAY_MS, "from two weeks ago")
    ship.submit("s", now_ms(), "today")
    assert ship.flush(FLUSH)
    ship.submit("s", now_ms(), "refused")
    assert ship.flush(FLUSH)
    ship.submit("s", now_ms(), "after the refusal")
    assert ship.flush(FLUSH)
    ship.stop()
    assert stream_messages(logs_reader(endpoint), group, "s") == ["today", "after the refusal"]
    assert (ship.counters.dropped, ship.counters.shipped) == (2, 2)
    assert "can never accept" in caplog.text and "from two weeks ago" in caplog.text


def test_a_full_queue_waits_for_room_then_counts_lost_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shipper, "MAX_QUEUE_EVENTS", 3)
    ship = Shipper(Spool(tmp_path), None, "/g", retention_days=None, owns_group=False)
    # not started: nothing empties the queue
    assert all(ship.submit("s", 1, f"line {i}") for i in range(3))
    started = time.monotonic()
    assert not ship.submit("s", 1, "waits, then is lost", wait=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    assert not ship.submit("s", 1, "does not wait once a wait timed out", wait=5.0)
    assert time.monotonic() - started < 0.1
    assert ship.counters.lost == 2


def test_handler_formats_records_and_skips_sdk_debug_lines_of_the_shipping_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ship = Shipper(Spool(tmp_path), None, "/g", retention_days=None, owns_group=False)
    handler = CloudWatchHandler(ship, "agent/a-1")
    loggers = [logging.getLogger(name) for name in ("test.cloudwatch", "botocore.test")]
    for logger in loggers:
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    ours, sdk = loggers
    ours.info("hello %s", "world")
    sdk.debug("botocore chatter from some other thread")
    monkeypatch.setattr(ship, "is_own_thread", lambda: True)
    sdk.debug("botocore chatter about the last put")
    sdk.warning("a warning from botocore on a shipping thread")
    ours.info("counters from a shipping thread")
    queued = [message for _, message in ship._queue["agent/a-1"]]
    assert queued == [
        "INFO test.cloudwatch: hello world",
        "DEBUG botocore.test: botocore chatter from some other thread",
        "WARNING botocore.test: a warning from botocore on a shipping thread",
        "INFO test.cloudwatch: counters from a shipping thread",
    ]
    for logger in loggers:
        logger.removeHandler(handler)


def test_the_fast_serializer_writes_the_body_botocore_would(endpoint: str) -> None:
    client = logs_client(REGION, endpoint)
    operation = client.meta.service_model.operation_model("PutLogEvents")
    params = {
        "logGroupName": "/g",
        "logStreamName": "s",
        "logEvents": [{"timestamp": 1, "message": "é\n"}, {"timestamp": 2, "message": "x"}],
    }
    assert type(client._serializer) is not JSONSerializer
    ours = client._serializer.serialize_to_request(params, operation)
    botocores = JSONSerializer().serialize_to_request(params, operation)
    assert ours == botocores
