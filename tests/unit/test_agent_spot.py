"""The agent's spot-notice watcher against a loopback fake metadata service.

No emulator of AWS IMDSv2 or of the GCP metadata server exists; ``tests/fake_metadata.py`` is a
fake faithful to their public references (token handling, 404 until a notice, ETags and
``wait_for_change``), and these tests run the real watcher against it over HTTP.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.protocol import InterruptionNotice, NoticeKind
from agent.spot import GCP_PREEMPTION_NOTICE, SpotWatcher
from tests.fake_metadata import FakeMetadata

NOW = datetime(2026, 12, 7, 12, 2, 10, tzinfo=UTC)


def _sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body with asyncio.run (the project uses no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture
def aws() -> Iterator[FakeMetadata]:
    fake = FakeMetadata("aws")
    yield fake
    fake.close()


@pytest.fixture
def gcp() -> Iterator[FakeMetadata]:
    fake = FakeMetadata("gcp")
    yield fake
    fake.close()


async def _until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def _watcher(url: str, cloud: str, seen: list[InterruptionNotice]) -> SpotWatcher:
    return SpotWatcher(url, cloud, seen.append, aws_poll_seconds=0.02, clock=lambda: NOW)  # type: ignore[arg-type]


@_sync
async def test_aws_instance_action_is_reported_once_with_its_deadline(aws: FakeMetadata) -> None:
    seen: list[InterruptionNotice] = []
    watcher = _watcher(aws.url, "auto", seen)
    task = asyncio.create_task(watcher.run())
    try:
        await _until(lambda: len(aws.paths()) >= 4)
        assert watcher.watching == "aws" and seen == []
        aws.interrupt("terminate", "2026-12-07T12:04:10Z")
        await _until(lambda: seen)
        polls = len(aws.paths())
        await _until(lambda: len(aws.paths()) >= polls + 6)  # keeps polling, reports nothing new
    finally:
        task.cancel()
    assert len(seen) == 1
    notice = seen[0]
    assert notice.kind is NoticeKind.INTERRUPTION and notice.cloud == "aws"
    assert notice.deadline == datetime(2026, 12, 7, 12, 4, 10, tzinfo=UTC)
    assert notice.detail == "terminate" and notice.noticed_at == NOW
    # IMDSv2: a token first, and no metadata read was refused for want of one.
    assert aws.paths("PUT")[0] == "/latest/api/token"


@_sync
async def test_aws_rebalance_recommendation_has_no_deadline(aws: FakeMetadata) -> None:
    seen: list[InterruptionNotice] = []
    aws.recommend_rebalance("2026-12-07T12:00:00Z")
    task = asyncio.create_task(_watcher(aws.url, "aws", seen).run())
    try:
        await _until(lambda: seen)
        aws.interrupt("terminate", "2026-12-07T12:04:10Z")
        await _until(lambda: len(seen) == 2)
    finally:
        task.cancel()
    assert [n.kind for n in seen] == [NoticeKind.REBALANCE, NoticeKind.INTERRUPTION]
    assert seen[0].deadline is None and "12:00:00Z" in seen[0].detail


@_sync
async def test_aws_expired_token_is_renewed(aws: FakeMetadata) -> None:
    seen: list[InterruptionNotice] = []
    task = asyncio.create_task(_watcher(aws.url, "aws", seen).run())
    try:
        await _until(lambda: len(aws.paths()) >= 2)
        aws.expire_tokens()
        puts = len(aws.paths("PUT"))
        await _until(lambda: len(aws.paths("PUT")) > puts)
        aws.interrupt("stop", "2026-12-07T12:04:10Z")
        await _until(lambda: seen)
    finally:
        task.cancel()
    assert seen[0].detail == "stop"


@_sync
async def test_gcp_preemption_answers_a_waiting_request_with_a_30s_deadline(
    gcp: FakeMetadata,
) -> None:
    seen: list[InterruptionNotice] = []
    watcher = _watcher(gcp.url, "auto", seen)
    task = asyncio.create_task(watcher.run())
    try:
        # The first read has no ETag; the second waits for a change.
        await _until(lambda: len([p for p in gcp.paths() if p.endswith("/preempted")]) >= 2)
        await asyncio.sleep(0.1)
        assert watcher.watching == "gcp" and seen == []
        gcp.preempt()
        await _until(lambda: seen)
        await asyncio.wait_for(task, 5)  # a preempted VM stays preempted: the watch ends
    finally:
        task.cancel()
    assert seen[0].cloud == "gcp" and seen[0].kind is NoticeKind.INTERRUPTION
    assert seen[0].deadline == NOW + GCP_PREEMPTION_NOTICE == NOW + timedelta(seconds=30)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@_sync
async def test_no_metadata_service_turns_the_watch_off_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[InterruptionNotice] = []
    caplog.set_level(logging.INFO, logger="agent.spot")
    url = f"http://127.0.0.1:{_closed_port()}"
    await asyncio.wait_for(_watcher(url, "auto", seen).run(), 5)
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.spot"]
    assert lines == [f"spot notices: a metadata service does not answer at {url}; not watching"]


@_sync
async def test_the_other_clouds_service_is_not_watched(
    gcp: FakeMetadata, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.spot")
    watcher = _watcher(gcp.url, "aws", [])
    await asyncio.wait_for(watcher.run(), 5)
    assert watcher.watching is None
    assert "the AWS metadata service does not answer" in caplog.text


def test_metadata_settings_are_checked_and_named() -> None:
    from agent.config import ConfigError, load_config

    config = load_config(None, {"join_token": "t", "metadata_url": "http://127.0.0.1:9/"}, {})
    assert config.metadata_url == "http://127.0.0.1:9" and config.metadata_service == "auto"
    with pytest.raises(ConfigError, match=r"metadata_url \(from --metadata-url\): expected"):
        load_config(None, {"join_token": "t", "metadata_url": "169.254.169.254"}, {})
    with pytest.raises(ConfigError, match=r"metadata_service \(from DET_AGENT_METADATA_SERVICE\)"):
        load_config(None, {"join_token": "t"}, {"DET_AGENT_METADATA_SERVICE": "azure"})
