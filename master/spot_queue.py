"""The cluster-side spot signal on AWS: EventBridge → an SQS queue → the master.

An agent's own watch (``agent/spot.py``) fails exactly when it matters most for a hung agent:
so the master may also read the account's EC2 events from an SQS queue that an EventBridge rule
feeds. How AWS sends them (EventBridge, source ``aws.ec2``; the SQS message body is the event
JSON itself):

- ``detail-type: "EC2 Spot Instance Interruption Warning"``, ``detail: {"instance-id": "i-…",
  "instance-action": "terminate" | "stop" | "hibernate"}``, sent two minutes before the
  interruption; ``time`` is when the event was emitted, so the deadline is ``time`` + 2 min.
- ``detail-type: "EC2 Instance Rebalance Recommendation"``, ``detail: {"instance-id": "i-…"}``.

Other events on the queue (e.g. state-change notifications) are deleted unread. A notice for an
instance whose agent is not connected to this master is dropped (another cluster's, or gone).
On AWS an agent's id is its instance id (``agent_image/``), which is how events find agents.

SQS limits used (AWS wording): ``WaitTimeSeconds`` at most 20 (long polling),
``MaxNumberOfMessages`` at most 10.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from agent.protocol import InterruptionNotice, NoticeKind
from master.scheduler.loop import Scheduler
from master.scheduler.state import AgentNotice

log = logging.getLogger(__name__)

SQS_MAX_WAIT_SECONDS = 20  # "WaitTimeSeconds … valid values: 0 to 20"
SQS_MAX_MESSAGES = 10  # "MaxNumberOfMessages … valid values: 1 to 10"
RETRY_SECONDS = 10.0
AWS_SPOT_NOTICE = timedelta(minutes=2)
INTERRUPTION_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE_RECOMMENDATION = "EC2 Instance Rebalance Recommendation"


def parse_event(body: str) -> tuple[str, InterruptionNotice] | None:
    """The instance id and the notice an EventBridge EC2 event carries, or None for another
    event. Raises ValueError for a body that is not an EventBridge event."""
    event: dict[str, Any] = json.loads(body)
    kind = event.get("detail-type")
    if kind not in (INTERRUPTION_WARNING, REBALANCE_RECOMMENDATION):
        return None
    detail = event["detail"]
    emitted = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    instance_id = str(detail["instance-id"])
    if kind == INTERRUPTION_WARNING:
        notice = InterruptionNotice(
            kind=NoticeKind.INTERRUPTION,
            cloud="aws",
            deadline=emitted + AWS_SPOT_NOTICE,
            noticed_at=emitted,
            detail=f"{detail.get('instance-action', 'terminate')} (EventBridge)",
        )
    else:
        notice = InterruptionNotice(
            kind=NoticeKind.REBALANCE,
            cloud="aws",
            deadline=None,
            noticed_at=emitted,
            detail="rebalance recommendation (EventBridge)",
        )
    return instance_id, notice


class SpotQueue:
    """Long-polls the queue in a worker thread and hands each notice to the scheduler as an
    :class:`AgentNotice` from the cluster side (no agent link). Deletes every message it read,
    after handling it; a message it could not parse is logged and deleted too."""

    def __init__(
        self,
        scheduler: Scheduler,
        queue_url: str,
        region: str | None = None,
        endpoint_url: str | None = None,
        wait_seconds: int = SQS_MAX_WAIT_SECONDS,
    ) -> None:
        import boto3  # only clusters with the queue need it

        self.scheduler = scheduler
        self.queue_url = queue_url
        self.wait_seconds = wait_seconds
        self.sqs = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spot queue")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        log.info("spot notices: reading EventBridge events from %s", self.queue_url)
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "spot notices: cannot read %s (retrying in %.0fs): %s",
                    self.queue_url,
                    RETRY_SECONDS,
                    exc,
                )
                await asyncio.sleep(RETRY_SECONDS)

    async def poll_once(self) -> int:
        """One long poll; returns how many notices went to the scheduler."""
        answer = await asyncio.to_thread(
            self.sqs.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=SQS_MAX_MESSAGES,
            WaitTimeSeconds=self.wait_seconds,
        )
        handled = 0
        for message in answer.get("Messages", []):
            try:
                parsed = parse_event(message["Body"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("spot notices: ignoring a message that is no EC2 event: %s", exc)
                parsed = None
            if parsed is not None:
                instance_id, notice = parsed
                if instance_id in self.scheduler.agents:
                    await self.scheduler.call(
                        AgentNotice(agent_id=instance_id, link=None, notice=notice)
                    )
                    handled += 1
                else:
                    log.info("spot notices: %s is not an agent of this master", instance_id)
            await asyncio.to_thread(
                self.sqs.delete_message,
                QueueUrl=self.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
            )
        return handled
