"""The cluster-side spot signal: EventBridge → SQS → the master's scheduler, on moto in server
mode (events and sqs) and a real database (SQLite and PostgreSQL), with a fake agent link."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from master.scheduler.state import Allocation, Preemption
from master.spot_queue import INTERRUPTION_WARNING, REBALANCE_RECOMMENDATION, SpotQueue
from master.state import MasterState
from tests.integration.cluster import free_port
from tests.integration.test_scheduler_loop import connect, hello, run, submit
from tests.integration.test_spot_notices_scheduler import started

REGION = "us-east-1"


@pytest.fixture
def queue_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """An SQS queue fed by an EventBridge rule for EC2's spot events, as docs/spot.md says to
    set it up; yields (endpoint, queue url)."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", REGION),
    ):
        monkeypatch.setenv(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
        url = sqs.create_queue(QueueName="flotilla-spot")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events = boto3.client("events", region_name=REGION, endpoint_url=endpoint)
        pattern = {
            "source": ["aws.ec2"],
            "detail-type": [INTERRUPTION_WARNING, REBALANCE_RECOMMENDATION],
        }
        events.put_rule(Name="flotilla-spot", EventPattern=json.dumps(pattern))
        events.put_targets(Rule="flotilla-spot", Targets=[{"Id": "queue", "Arn": arn}])
        yield endpoint, url
    finally:
        server.stop()


def emit(endpoint: str, kind: str, instance_id: str, at: datetime) -> None:
    events = boto3.client("events", region_name=REGION, endpoint_url=endpoint)
    detail = {"instance-id": instance_id}
    if kind == INTERRUPTION_WARNING:
        detail["instance-action"] = "terminate"
    answer = events.put_events(
        Entries=[
            {"Source": "aws.ec2", "DetailType": kind, "Detail": json.dumps(detail), "Time": at}
        ]
    )
    assert answer["FailedEntryCount"] == 0


def test_an_interruption_warning_on_the_queue_preempts_the_instances_trials(
    db_url: str, tmp_path: Path, queue_url: tuple[str, str]
) -> None:
    endpoint, url = queue_url

    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        asked: list[tuple[str, Preemption]] = []

        async def preempt(allocation: Allocation, why: Preemption) -> None:
            asked.append((allocation.id, why))

        scheduler.preempt_hooks["TRIAL"] = preempt
        link, _ = await connect(state, hello("i-0abc", 1))
        trial = await submit(state, 1, "TRIAL")
        await started(state, link, "i-0abc", trial.allocation_id)
        queue = SpotQueue(scheduler, url, REGION, endpoint, wait_seconds=1)
        at = datetime.now(UTC).replace(microsecond=0)
        emit(endpoint, INTERRUPTION_WARNING, "i-0abc", at)
        emit(endpoint, INTERRUPTION_WARNING, "i-0other", at)  # not ours: dropped
        emit(endpoint, REBALANCE_RECOMMENDATION, "i-0abc", at)  # after the warning: nothing new
        handled = 0
        for _ in range(5):
            handled += await queue.poll_once()
        assert handled == 2
        assert [a for a, _ in asked] == [trial.allocation_id]
        assert asked[0][1].deadline == at + timedelta(minutes=2)
        assert "(EventBridge)" in asked[0][1].reason
        assert scheduler.agents["i-0abc"].interrupting
        # Every message was deleted once read.
        left = queue.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
        assert left.get("Messages", []) == []

    run(db_url, tmp_path, body)
