"""How long a trial waits for a master that does not answer.

A master restart, a crash with ``kill -9`` or a network cut can last minutes; a trial that has
trained for hours should ride it out. So every call to the master that may not have reached it,
or may not have been applied, is retried with capped exponential backoff until the master has
been unreachable for ``master_unreachable_timeout`` (master.yaml; the task gets it in
``DET_MASTER_UNREACHABLE_TIMEOUT``, seconds). Retrying is safe because every report carries an
idempotency key the master stores once (docs/design/experiments.md, "REST used by the harness").

Retried: no HTTP answer at all (refused, reset, read timeout, dropped connection:
:class:`~harness.client.MasterUnreachableError`) and the gateway statuses a proxy or a master
that is starting answers with (502, 503, 504). Never retried: any other status; the master has
answered and repeating the request would not change its mind.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from harness.client import APIError, ClientError, MasterUnreachableError
from harness.task_config import MASTER_UNREACHABLE_TIMEOUT

log = logging.getLogger("harness.core")

ENV_VAR = "DET_MASTER_UNREACHABLE_TIMEOUT"
# master.yaml's default (master/config.py); used when a task runs without the variable.
DEFAULT_TIMEOUT_SECONDS = MASTER_UNREACHABLE_TIMEOUT.total_seconds()
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 30.0
# "Bad gateway", "service unavailable", "gateway timeout": a proxy in front of a master that is
# down, or a master still starting. The request was not applied.
RETRIED_STATUSES = frozenset({502, 503, 504})

T = TypeVar("T")


class MasterGoneError(MasterUnreachableError):
    """The master stayed unreachable for longer than ``master_unreachable_timeout``."""


def retryable(exc: BaseException) -> bool:
    """Whether ``exc`` means the request may not have reached or been applied by the master."""
    if isinstance(exc, MasterUnreachableError):
        return True
    return isinstance(exc, APIError) and exc.status in RETRIED_STATUSES


def timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``DET_MASTER_UNREACHABLE_TIMEOUT`` in seconds (the default when unset or invalid)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    try:
        seconds = float(value)
    except ValueError:
        if value:
            log.warning(
                "%s=%r is not a number of seconds; using %.0f",
                ENV_VAR,
                value,
                DEFAULT_TIMEOUT_SECONDS,
            )
        return DEFAULT_TIMEOUT_SECONDS
    return seconds if seconds >= 0 else DEFAULT_TIMEOUT_SECONDS


class Patience:
    """Runs a call until it succeeds, fails for good, or the master has not answered for
    ``timeout`` seconds since the call's first failure. ``clock`` and ``sleep`` are injected
    for tests. Thread-safe (it keeps no state between calls)."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        *,
        first_delay: float = FIRST_DELAY_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout = timeout
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.clock = clock
        self.sleep = sleep

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried as the module docstring says; ``what`` names it in the log. Raises
        :class:`MasterGoneError` once the timeout has passed, and any other error at once."""
        gave_up_at: float | None = None
        delay = self.first_delay
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except ClientError as exc:
                if not retryable(exc):
                    raise
                now = self.clock()
                if gave_up_at is None:
                    gave_up_at = now + self.timeout
                left = gave_up_at - now
                if left <= 0:
                    master = getattr(exc, "master", "") or "the master"
                    raise MasterGoneError(
                        master,
                        f"no answer for {self.timeout:.0f}s ({attempts} attempts of {what}; "
                        f"last: {exc}); giving up (master_unreachable_timeout in master.yaml, "
                        f"{ENV_VAR} in the task)",
                    ) from exc
                wait = min(delay, left)
                log.warning("%s: %s; retrying in %.0fs (giving up in %.0fs)", what, exc, wait, left)
                self.sleep(wait)
                delay = min(delay * 2, self.max_delay)
