"""PostgreSQL restarted under load: every session of the master's pool ended at once, the
server away for a few seconds, then back. The master reconnects (``pool_pre_ping``), and a
trial reporting every half second, with readers polling the API beside it, loses nothing.

PostgreSQL only: the test needs a database server to restart, a private one (see
:mod:`tests.chaos.private_postgres`); SQLite is a file in the master's process, with no
connection to lose."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.cluster import STEP_SECONDS, ChaosCluster, chaos_cluster
from tests.chaos.private_postgres import PrivatePostgres
from tests.integration.cluster import Api

STEPS = 40
CHECKPOINT_EVERY = 8
DOWN_SECONDS = 4.0
READERS = 4


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(tmp_path)
    server.init()
    try:
        yield server
    finally:
        server.stop("immediate")


@pytest.fixture
def cluster(tmp_path: Path, postgres: PrivatePostgres) -> Iterator[ChaosCluster]:
    with chaos_cluster(tmp_path, postgres.url) as found:
        found.add_agent("agent-0")
        yield found


def _read_until(api: Api, trial_id: int, stop: threading.Event, log: list[int]) -> None:
    """Load beside the trial: read its metrics, the trial and the task list, over and over;
    ``log`` gets each answer's status (0: no answer)."""
    paths = [f"/api/v1/trials/{trial_id}/metrics", f"/api/v1/trials/{trial_id}", "/api/v1/tasks"]
    while not stop.is_set():
        for path in paths:
            try:
                log.append(api.get(path, timeout=10).status_code)
            except httpx.HTTPError:
                log.append(0)


@pytest.mark.timeout(240)
def test_the_master_reconnects_after_postgresql_restarts_under_load_and_nothing_is_lost(
    cluster: ChaosCluster, postgres: PrivatePostgres
) -> None:
    trial_id = cluster.submit(STEPS, CHECKPOINT_EVERY)
    cluster.wait_step("1", 6)
    stop = threading.Event()
    answers: list[list[int]] = [[] for _ in range(READERS)]
    readers = [
        threading.Thread(target=_read_until, args=(cluster.api(), trial_id, stop, log), daemon=True)
        for log in answers
    ]
    for reader in readers:
        reader.start()
    try:
        time.sleep(1.0)
        postgres.stop("fast")
        time.sleep(DOWN_SECONDS)
        postgres.start()
        trial = cluster.wait_ended(trial_id, timeout=STEPS * STEP_SECONDS + 90)
    finally:
        stop.set()
        for reader in readers:
            reader.join(15)

    assert cluster.master.alive()
    assert trial["state"] == "STATE_COMPLETED", trial["stateReason"]
    assert trial["restarts"] == 0
    for log in answers:  # every reader was answered again once the server was back
        assert log and log[-1] == 200, log[-20:]
    (allocation,) = cluster.allocations(trial["taskId"])
    assert allocation["exitCode"] == 0, allocation["exitReason"]
    cluster.assert_nothing_lost_or_doubled(trial_id, STEPS)
