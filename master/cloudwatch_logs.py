"""The master's CloudWatch shipping (``logging:`` in ``master.yaml``).

The master owns the log group: it creates it and sets its retention at every start. Its own
Python logging (and uvicorn's, which does not propagate to the root logger) goes to
``<stream_prefix>master``; with ``ship_task_logs``, every task log line it stores goes to
``<stream_prefix>task/<task-id>`` after it is in the database. Lines wait in a spool under
``<data_dir>/cloudwatch-spool`` until CloudWatch has them, so a master restart loses none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agent.cloudwatch.client import ShipperError
from agent.cloudwatch.config import CloudWatchConfig
from agent.cloudwatch.handler import ProcessShipping, ship_process_logs
from agent.cloudwatch.shipper import Shipper
from master.config import ConfigError, MasterConfig
from master.logs import LogLine, LogStore

SPOOL_DIR = "cloudwatch-spool"
LOGGERS = ("", "uvicorn")  # the root logger, and uvicorn's, which does not propagate


def start(config: MasterConfig, cluster_id: str, logs: LogStore) -> ProcessShipping | None:
    """Start shipping if ``config.logging`` asks for it; ``None`` otherwise."""
    settings = config.logging
    if settings is None:
        return None
    try:
        shipping = ship_process_logs(
            settings,
            config.resolved_data_dir / SPOOL_DIR,
            settings.master_stream(),
            settings.group_name(cluster_id),
            owns_group=True,
            loggers=LOGGERS,
        )
    except ShipperError as e:
        raise ConfigError(str(e)) from None
    if settings.ship_task_logs:
        logs.on_append = TaskLogShipper(shipping.shipper, settings)
    return shipping


async def stop(shipping: ProcessShipping | None, logs: LogStore) -> None:
    """Ship what is left (bounded by the shipper's stop timeout), off the event loop."""
    if shipping is not None:
        logs.on_append = None
        await asyncio.to_thread(shipping.stop)


class TaskLogShipper:
    """``LogStore.on_append``: queues a task's stored lines for its stream; never blocks."""

    def __init__(self, shipper: Shipper, settings: CloudWatchConfig) -> None:
        self.shipper = shipper
        self.settings = settings

    def __call__(self, task_id: str, lines: Sequence[LogLine]) -> None:
        self.shipper.submit_many(
            self.settings.task_stream(task_id),
            ((int(line.timestamp.timestamp() * 1000), line.log) for line in lines),
        )
