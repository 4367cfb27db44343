"""A ``logging.Handler`` that hands records to a :class:`~agent.cloudwatch.shipper.Shipper`.

``emit`` formats the record and appends it to the shipper's in-memory queue: no I/O, no
network, a lock held for a list append. Only when the queue is full (the spool writer is
behind) does it wait, at most :data:`MAX_WAIT` seconds, and only until one such wait has
timed out: after that, lines are counted as lost until the writer catches up, so a stuck
disk never stalls the process that logs.

Records from botocore and urllib3 below WARNING are not shipped when the shipper's own
threads emit them: the debug lines about one PutLogEvents call would otherwise feed the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.cloudwatch.client import logs_client
from agent.cloudwatch.config import CloudWatchConfig
from agent.cloudwatch.shipper import STOP_TIMEOUT, Shipper
from agent.cloudwatch.spool import Spool

# CloudWatch stores its own timestamp (the record's creation time) beside each line.
FORMAT = "%(levelname)s %(name)s: %(message)s"
MAX_WAIT = 0.5  # seconds a logging call may wait for room in a full queue
SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


class CloudWatchHandler(logging.Handler):
    """Ships every record it handles to ``stream`` through ``shipper``."""

    def __init__(self, shipper: Shipper, stream: str, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.shipper = shipper
        self.stream = stream
        self.setFormatter(logging.Formatter(FORMAT))

    def handle(self, record: logging.LogRecord) -> bool:
        """Like ``logging.Handler.handle`` without the handler's lock: ``emit`` is thread-safe,
        and a producer waiting for room must not hold up the shipper's own log records."""
        passed = self.filter(record)
        if isinstance(passed, logging.LogRecord):  # Python >= 3.12 filters may replace it
            record = passed
        if passed:
            self.emit(record)
        return bool(passed)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if (
                record.levelno < logging.WARNING
                and record.name.startswith(SDK_LOGGERS)
                and self.shipper.is_own_thread()
            ):
                return
            message = self.format(record)
            self.shipper.submit(self.stream, int(record.created * 1000), message, MAX_WAIT)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


@dataclass
class ProcessShipping:
    """This process's logging, shipped: stop it last, after the final log lines."""

    shipper: Shipper
    handler: CloudWatchHandler
    loggers: tuple[str, ...]

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        for name in self.loggers:
            logging.getLogger(name).removeHandler(self.handler)
        self.shipper.stop(timeout)


def ship_process_logs(
    config: CloudWatchConfig,
    spool_dir: Path,
    stream: str,
    log_group: str | Callable[[], str],
    owns_group: bool,
    loggers: tuple[str, ...] = ("",),
) -> ProcessShipping:
    """Start a shipper spooling under ``spool_dir`` and attach a handler for ``stream`` to
    ``loggers`` (``""`` is the root logger). Raises :class:`ShipperError` for a config that
    cannot work (no region) and ``OSError`` if the spool directory cannot be made."""
    client = logs_client(config.region, config.endpoint_url)
    shipper = Shipper(Spool(spool_dir), client, log_group, config.retention_days, owns_group)
    shipper.start()
    handler = CloudWatchHandler(shipper, stream)
    for name in loggers:
        logging.getLogger(name).addHandler(handler)
    return ProcessShipping(shipper, handler, loggers)
