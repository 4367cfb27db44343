"""The harness's patience with a master that does not answer (``harness.core.patience``): what
is retried, the capped backoff, and giving up after ``master_unreachable_timeout`` with a
message that says so. A fake clock; nothing sleeps."""

from __future__ import annotations

import pytest

from harness.client import APIError, BadRequestError, MasterUnreachableError
from harness.core.patience import MasterGoneError, Patience, retryable, timeout_from_env


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def unreachable() -> MasterUnreachableError:
    return MasterUnreachableError("http://master:8080", "connection refused")


def test_what_is_retried_and_what_is_not() -> None:
    assert retryable(unreachable())  # refused, reset, read timeout, dropped connection
    for status in (502, 503, 504):
        assert retryable(APIError(status, "gateway"))
    for status in (400, 401, 403, 404, 409, 500):
        assert not retryable(APIError(status, "answered"))


def test_backoff_doubles_to_its_cap_and_the_call_succeeds_when_the_master_is_back() -> None:
    clock = FakeClock()
    patience = Patience(600, clock=lambda: clock.now, sleep=clock.sleep)
    failures = 9

    def call() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise unreachable()
        return "stored"

    assert patience.call("POST /x", call) == "stored"
    assert clock.slept == [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_it_gives_up_after_the_timeout_with_a_message_naming_the_setting() -> None:
    clock = FakeClock()
    patience = Patience(60, clock=lambda: clock.now, sleep=clock.sleep)
    attempts = 0

    def call() -> None:
        nonlocal attempts
        attempts += 1
        raise APIError(503, "service unavailable")

    with pytest.raises(MasterGoneError) as caught:
        patience.call("POST /api/v1/trials/5/reports", call)
    assert sum(clock.slept) == 60  # the last wait is cut to the time left
    assert clock.slept == [1, 2, 4, 8, 16, 29]
    message = str(caught.value)
    assert "no answer for 60s" in message and "master_unreachable_timeout" in message
    assert "POST /api/v1/trials/5/reports" in message and attempts == 7
    assert isinstance(caught.value, MasterUnreachableError)


def test_an_answer_is_not_retried() -> None:
    clock = FakeClock()
    patience = Patience(600, clock=lambda: clock.now, sleep=clock.sleep)

    def call() -> None:
        raise BadRequestError(400, "searcherMetric: expected a finite number")

    with pytest.raises(BadRequestError):
        patience.call("POST /x", call)
    assert clock.slept == []


def test_the_timeout_comes_from_the_task_environment() -> None:
    assert timeout_from_env({"DET_MASTER_UNREACHABLE_TIMEOUT": "60.0"}) == 60.0
    assert timeout_from_env({}) == 600.0
    assert timeout_from_env({"DET_MASTER_UNREACHABLE_TIMEOUT": "soon"}) == 600.0
