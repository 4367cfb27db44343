"""Trial reports against a real master (SQLite and PostgreSQL): each report's idempotency key is
stored once, so a repeated report, even one whose first answer was lost after the master
stored it, is applied once; a repeated completed operation neither fails the trial nor
advances the searcher twice; and the harness rides out a master that is down for longer than
its old 15 s of retries, then gives up with a clear message once master_unreachable_timeout has
passed.

The trial's process is not started (no agent): its allocation stays queued and gets the token
the scheduler would give it (``bench.metrics_ingest``); the reports are made by the harness's
own ``TrialAPI`` or by hand."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.metrics_ingest import experiment_body, issue_tokens, queued_trials
from harness.client import MasterClient
from harness.core.api import TrialAPI
from harness.core.patience import MasterGoneError, Patience
from tests.integration.cluster import Api, Master, running_cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    # The master process runs this tree's code, whatever tree the virtualenv points to.
    for master, _ in running_cluster(tmp_path, db_url, agents=0, env={"PYTHONPATH": str(ROOT)}):
        yield master


class Trial:
    """A queued trial's ids and its allocation token."""

    def __init__(self, master: Master, db_url: str, max_batches: int = 10**9) -> None:
        body = experiment_body(0)
        body["config"] = body["config"].replace(str(10**9), str(max_batches))
        created = Api(master).post("/api/v1/experiments", json=body)
        assert created.status_code == 200, created.text
        self.trial_id, self.task_id, self.allocation_id = queued_trials(db_url, 1)[0]
        self.token = issue_tokens(db_url, [self.allocation_id])[0]
        self.http = httpx.Client(
            base_url=master.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )
        self.master = master

    def api(self, url: str | None = None, patience: Patience | None = None) -> TrialAPI:
        client = MasterClient(url or self.master.url, self.token)
        return TrialAPI(
            client,
            trial_id=self.trial_id,
            trial_run_id=1,
            task_id=self.task_id,
            allocation_id=self.allocation_id,
            patience=patience,
        )

    def steps(self) -> list[int]:
        got = Api(self.master).get(f"/api/v1/trials/{self.trial_id}/metrics")
        assert got.status_code == 200, got.text
        return [m["stepsCompleted"] for m in got.json()["metrics"]]

    def state(self) -> str:
        got = Api(self.master).get(f"/api/v1/trials/{self.trial_id}")
        return str(got.json()["trial"]["state"])

    def checkpoints(self) -> list[str]:
        got = Api(self.master).get(f"/api/v1/trials/{self.trial_id}/checkpoints")
        return [c["uuid"] for c in got.json()["checkpoints"]]


def metrics_report(key: str, step: int) -> dict[str, Any]:
    return {
        "key": key,
        "metrics": {"metrics": {"stepsCompleted": step, "avgMetrics": {"loss": 0.5}}, "group": "t"},
    }


def test_a_report_sent_twice_with_its_key_is_stored_once(master: Master, db_url: str) -> None:
    trial = Trial(master, db_url)
    reports = {"reports": [metrics_report(f"k{step}", step) for step in (1, 2, 3)]}
    path = f"/api/v1/trials/{trial.trial_id}/reports"
    first = trial.http.post(path, json=reports)
    assert first.status_code == 200 and first.json() == {"stored": 3, "repeated": 0}
    again = trial.http.post(path, json=reports)
    assert again.status_code == 200 and again.json() == {"stored": 0, "repeated": 3}
    single = {"metrics": {"stepsCompleted": 2, "avgMetrics": {"loss": 0.5}}, "group": "t"}
    headers = {"Idempotency-Key": "k2"}
    for _ in range(2):  # Determined's single route takes the key in a header
        one = trial.http.post(
            f"/api/v1/trials/{trial.trial_id}/metrics", json=single, headers=headers
        )
        assert one.status_code == 200, one.text
    assert trial.steps() == [1, 2, 3]

    # A checkpoint registered twice with its key: one checkpoint.
    body = {
        "checkpoint": {
            "uuid": str(uuid.uuid4()),
            "resources": {"w": 1},
            "metadata": {"steps_completed": 3},
        }
    }
    for _ in range(2):
        registered = trial.http.post(
            "/api/v1/checkpoints", json=body, headers={"Idempotency-Key": "c"}
        )
        assert registered.status_code == 200, registered.text
    assert trial.checkpoints() == [body["checkpoint"]["uuid"]]


def test_a_repeated_completed_operation_neither_fails_the_trial_nor_advances_the_searcher(
    master: Master, db_url: str
) -> None:
    trial = Trial(master, db_url, max_batches=3)
    op = trial.http.get(f"/api/v1/trials/{trial.trial_id}/searcher/operation").json()
    assert op == {"op": {"validateAfter": {"length": 3}}, "completed": False}
    path = f"/api/v1/trials/{trial.trial_id}/searcher/completed_operation"
    body = {"op": {"validateAfter": {"length": 3}}, "searcherMetric": 0.25}
    for _ in range(3):
        done = trial.http.post(path, json=body, headers={"Idempotency-Key": "op-1"})
        assert done.status_code == 200, done.text
    after = trial.http.get(f"/api/v1/trials/{trial.trial_id}/searcher/operation").json()
    assert after == {"op": None, "completed": True}
    assert trial.state() == "STATE_ACTIVE"


class LosingProxy:
    """A TCP proxy to the master that, for its first ``lose`` connections, forwards the
    request, waits for the master's answer (so the master has applied it), and closes the
    connection instead of passing the answer on: "the response was lost"."""

    def __init__(self, port: int, lose: int) -> None:
        self.port = port
        self.lose = lose
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            losing = self.lose > 0
            self.lose -= 1
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, losing), daemon=True
            ).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, lose: bool) -> None:
        try:
            while data := source.recv(65536):
                if lose:  # the answer came: the master has stored the report
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()

    def close(self) -> None:
        self.listener.close()


def test_a_report_whose_answer_was_lost_is_retried_and_stored_once(
    master: Master, db_url: str
) -> None:
    trial = Trial(master, db_url)
    proxy = LosingProxy(master.port, lose=2)
    api = trial.api(proxy.url, Patience(60, first_delay=0.1))
    try:
        for step in (1, 2, 3):
            api.report_metrics("training", step, {"loss": 1.0 / step})
        api.flush()
        api.report_checkpoint(str(uuid.uuid4()), {"w": 1}, {"steps_completed": 3})
        api.close()
    finally:
        proxy.close()
        api.client.close()
    assert proxy.lose < 0  # both losses happened: the answers of requests the master applied
    assert sorted(trial.steps()) == [1, 2, 3]
    assert len(trial.checkpoints()) == 1


def test_the_harness_rides_out_a_master_down_for_20s_and_gives_up_after_its_timeout(
    master: Master, db_url: str
) -> None:
    trial = Trial(master, db_url)
    api = trial.api(patience=Patience(60, first_delay=0.5, max_delay=2))
    api.report_metrics("training", 1, {"loss": 1.0})
    api.flush()
    master.stop()
    down_since = time.monotonic()
    checkpoint = str(uuid.uuid4())
    trained = threading.Event()

    def train() -> None:  # training goes on while the master is away; reports queue
        for step in range(2, 22):
            api.report_metrics("training", step, {"loss": 1.0 / step})
        api.report_checkpoint(checkpoint, {"w": 1}, {"steps_completed": 21})
        trained.set()

    trainer = threading.Thread(target=train)
    trainer.start()
    trainer.join(15)
    assert trained.is_set(), "training waited for the master (reports and checkpoint queue)"
    time.sleep(max(0.0, 22 - (time.monotonic() - down_since)))
    master.start()
    api.flush()  # waits with the reports' patience until the master has them all
    assert time.monotonic() - down_since > 20
    api.close()
    api.client.close()
    assert trial.steps() == list(range(1, 22))
    assert trial.checkpoints() == [checkpoint]

    master.stop()
    impatient = trial.api(patience=Patience(2, first_delay=0.5))
    impatient.report_metrics("training", 22, {"loss": 0.1})
    with pytest.raises(MasterGoneError, match=r"no answer for 2s .*master_unreachable_timeout"):
        impatient.flush()
    impatient.close(raise_error=False)
    impatient.client.close()
