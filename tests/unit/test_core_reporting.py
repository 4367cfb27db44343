"""Reports sent in the background (``harness.core.reporter``): they do not wait for the master,
reach it in order and before any call that follows them, a failure is raised by the next call,
and the queue is bounded. Also: no CA bundle is loaded for an ``http://`` master."""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import harness.core
from harness.client import (
    BadRequestError,
    MasterClient,
    NotFoundError,
    tls_verify,
)
from harness.core.api import TrialAPI
from harness.core.patience import MasterGoneError, Patience
from tests.fake_trial_master import (
    FakeTrialMaster,
    experiment_config,
    running_fake_trial_master,
    trial_environ,
)


@pytest.fixture
def master() -> Iterator[FakeTrialMaster]:
    with running_fake_trial_master([40], trial_id=5) as fake:
        yield fake


@pytest.fixture
def env(master: FakeTrialMaster, tmp_path: Path) -> dict[str, str]:
    return trial_environ(
        master, config=experiment_config(), hparams={}, storage_dir=tmp_path / "checkpoints"
    )


def test_reports_do_not_wait_and_arrive_in_order_before_what_follows(
    master: FakeTrialMaster, env: dict[str, str]
) -> None:
    with harness.core.init(environ=env) as core:
        op = next(core.searcher.operations())
        with master.changed:  # the fake answers nothing while the test holds its lock
            started = time.monotonic()
            for step in range(1, 41):
                core.train.report_training_metrics(step, {"loss": 1.0 / step})
                op.report_progress(step / 40)
            core.train.report_validation_metrics(40, {"validation_loss": 0.5})
            assert time.monotonic() - started < 5.0  # none of them waited for an answer
            assert master.posts("/metrics") == []
        with core.checkpoint.store_path({"steps_completed": 40}) as (path, _uuid):
            (path / "w").write_text("w")
        op.report_completed(0.5)

    kinds = [c.path.rsplit("/", 1)[-1] for c in master.calls]
    assert kinds == ["metrics", "progress"] * 40 + ["metrics", "checkpoints", "completed_operation"]
    metrics = master.posts("/metrics")
    assert [m["metrics"]["stepsCompleted"] for m in metrics] == [*range(1, 41), 40]
    assert [m["group"] for m in metrics] == ["training"] * 40 + ["validation"]
    assert master.progress() == [step / 40 for step in range(1, 41)]


def test_leaving_the_with_block_sends_what_is_queued(
    master: FakeTrialMaster, env: dict[str, str]
) -> None:
    with harness.core.init(environ=env) as core, master.changed:
        for step in range(1, 21):
            core.train.report_training_metrics(step, {"loss": 1.0})
    assert [m["stepsCompleted"] for m in master.metrics("training")] == list(range(1, 21))


# ---- failures, retries, the bound: a TrialAPI over httpx.MockTransport -----------------------


class Fake:
    """A scripted master: ``answer(request)`` is a status (or an exception to raise), and
    ``gate`` must be set before any answer is given."""

    def __init__(self, answer: Callable[[httpx.Request], int | Exception]) -> None:
        self.answer = answer
        self.gate = threading.Event()
        self.gate.set()
        self.received: list[tuple[str, Any]] = []  # (last path part, body) of each answered call
        self.batches: list[int] = []  # reports per answered POST /reports

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert self.gate.wait(10), "the test never opened the gate"
        outcome = self.answer(request)
        if isinstance(outcome, Exception):
            raise outcome
        body = json.loads(request.content) if request.content else None
        if outcome < 400:
            kind = request.url.path.rsplit("/", 1)[-1]
            if kind == "reports":  # the reporter's batch: recorded report by report
                self.batches.append(len(body["reports"]))
                for one in body["reports"]:
                    one_kind = "metrics" if "metrics" in one else "progress"
                    self.received.append((one_kind, one.get("metrics")))
            else:
                self.received.append((kind, body))
        return httpx.Response(outcome, json={"message": f"no: {request.url.path}"})

    def steps(self) -> list[int]:
        return [body["metrics"]["stepsCompleted"] for kind, body in self.received if body]

    def api(self, **options: Any) -> TrialAPI:
        client = MasterClient("http://master:8080", token="t", transport=httpx.MockTransport(self))
        return TrialAPI(
            client, trial_id=5, trial_run_id=1, task_id="t", allocation_id="a", **options
        )


def failing_step(step: int) -> Callable[[httpx.Request], int | Exception]:
    """400 for a request carrying the metrics of ``step`` (alone or in a batch)."""

    def answer(request: httpx.Request) -> int:
        body = json.loads(request.content) if request.content else {}
        reports = [one.get("metrics", {}) for one in body.get("reports", [])] or [body]
        steps = [one.get("metrics", {}).get("stepsCompleted") for one in reports]
        return 400 if step in steps else 200

    return answer


def report(api: TrialAPI, step: int) -> None:
    api.report_metrics("training", step, {"loss": 1.0})


def test_a_failed_report_is_raised_by_the_next_flush_and_what_followed_it_is_not_sent() -> None:
    fake = Fake(failing_step(2))
    api = fake.api()
    fake.gate.clear()
    report(api, 1)
    wait_until(lambda: api._reporter._queue.qsize() == 0)  # 1 is being sent, at the gate
    for step in (2, 3, 4):  # one request, which fails
        report(api, step)
    wait_until(lambda: api._reporter._queue.qsize() == 3)
    fake.gate.set()
    with pytest.raises(BadRequestError, match="no: /api/v1/trials/5/reports") as caught:
        api.flush()
    assert caught.value.__notes__ == [
        "sending training metrics of step 2 (and the 2 report(s) sent with it) failed in the "
        "background"
    ]
    assert fake.steps() == [1] and fake.batches == [1]
    api.flush()  # raised once; reporting goes on
    report(api, 6)
    api.flush()
    assert fake.steps() == [1, 6]
    api.close()


def test_a_failed_report_is_raised_by_the_next_report_or_call_which_does_nothing() -> None:
    fake = Fake(failing_step(1))
    api = fake.api()
    report(api, 1)
    wait_until(lambda: api._reporter.pending == 0)
    with pytest.raises(BadRequestError):
        report(api, 2)  # not queued
    report(api, 3)
    api.flush()

    fake.answer = lambda request: 400 if b"validation" in request.content else 200
    api.report_metrics("validation", 3, {"validation_loss": 0.5})
    with pytest.raises(BadRequestError):
        api.complete_operation(3, 0.5)  # the validation it refers to failed: not sent
    assert [kind for kind, _ in fake.received] == ["metrics"]
    assert fake.steps() == [3]
    api.close()


def test_closing_raises_a_failed_report_or_logs_it(
    env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake = Fake(failing_step(7))
    api = fake.api()
    report(api, 7)
    with pytest.raises(BadRequestError):
        api.close()

    api = fake.api()
    report(api, 7)
    with caplog.at_level(logging.ERROR, logger="harness.core"):
        api.close(raise_error=False)
    assert "sending training metrics of step 7 failed in the background" in caplog.text
    with pytest.raises(RuntimeError, match="closed"):
        report(api, 8)


def test_core_exit_raises_a_failed_report_unless_leaving_with_an_error(
    env: dict[str, str],
) -> None:
    bad = {**env, "DET_TRIAL_ID": "6"}  # the fake knows trial 5 only: 404 for trial 6's metrics
    with pytest.raises(NotFoundError), harness.core.init(environ=bad) as core:
        core.train.report_training_metrics(1, {"loss": 1.0})
    with pytest.raises(ZeroDivisionError), harness.core.init(environ=bad) as core:
        core.train.report_training_metrics(1, {"loss": 1.0})
        raise ZeroDivisionError


def test_an_unreachable_master_is_retried_in_the_background() -> None:
    attempts: list[int] = []

    def answer(request: httpx.Request) -> int | Exception:
        attempts.append(1)
        return httpx.ConnectError("refused") if len(attempts) <= 2 else 200

    fake = Fake(answer)
    api = fake.api(patience=Patience(0.5, first_delay=0.01))
    fake.gate.clear()
    report(api, 1)
    report(api, 2)
    fake.gate.set()
    api.flush()
    assert fake.steps() == [1, 2] and 3 <= len(attempts) <= 4

    fake.answer = lambda request: httpx.ConnectError("refused")
    report(api, 3)
    with pytest.raises(MasterGoneError, match=r"no answer for 0s .*giving up"):
        api.flush()
    api.close()


def test_a_full_queue_blocks_the_reporter_until_the_master_answers() -> None:
    fake = Fake(lambda request: 200)
    api = fake.api(queue_size=2)
    fake.gate.clear()
    report(api, 1)
    wait_until(lambda: api._reporter._queue.qsize() == 0)  # being sent, waiting at the gate
    report(api, 2)
    report(api, 3)  # the queue is full
    fourth = threading.Thread(target=report, args=(api, 4))
    fourth.start()
    fourth.join(0.3)
    assert fourth.is_alive()  # blocked: the queue does not grow
    fake.gate.set()
    fourth.join(10)
    assert not fourth.is_alive()
    api.close()
    assert fake.steps() == [1, 2, 3, 4]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# ---- TLS -------------------------------------------------------------------------------------


def test_no_ca_bundle_for_an_http_master_and_https_still_verifies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loaded.append(args or kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    MasterClient("http://127.0.0.1:8080").close()
    assert loaded == []
    context = tls_verify("http://127.0.0.1:8080")
    assert isinstance(context, ssl.SSLContext)  # were it ever used: verifies, trusts no one
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0

    assert tls_verify("https://master.example:443") is True
    MasterClient("https://master.example").close()
    assert len(loaded) == 1  # httpx's default: certifi's bundle
