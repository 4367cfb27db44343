"""``det deploy local cluster-up`` after the local cluster's master was killed with SIGKILL:
the real master is started again with the cluster's saved settings (same port, database, data
dir, join token), the agent that kept running re-attaches, and the command it was running
finishes on its first allocation; nothing was killed."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli.main import main
from tests.integration.cluster import Api, free_port, wait_for

TICKS = 40  # half a second each: the command outlives the crash and the restart


def _api(port: int, state: Path) -> Api:
    """An admin's client of the local cluster's master (Api wants a url and a log to show)."""
    master = SimpleNamespace(url=f"http://127.0.0.1:{port}", log_path=state / "logs" / "master.log")
    return Api(master)  # type: ignore[arg-type]


@pytest.mark.timeout(240)
def test_cluster_up_restarts_a_crashed_master_and_the_running_command_finishes(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOTILLA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DET_MASTER", raising=False)
    monkeypatch.setenv("DET_PASS", "")
    port = free_port()
    state = tmp_path / "home" / "local"
    up = ["deploy", "local", "cluster-up", "--agents", "1", "--no-gpu", "--db", db_url]
    assert main([*up, "--port", str(port)]) == 0
    try:
        before = json.loads((state / "cluster.json").read_text())
        api = _api(port, state)
        task_id = api.run(f"for i in $(seq 1 {TICKS}); do echo tick $i; sleep 0.5; done")
        wait_for(
            "the command to run",
            lambda: api.task(task_id)["allocations"][0]["state"] == "STATE_RUNNING",
            timeout=60,
        )
        (allocation,) = api.task(task_id)["allocations"]

        os.kill(before["master"]["pid"], signal.SIGKILL)
        time.sleep(3)
        capsys.readouterr()
        assert main(["deploy", "local", "cluster-up"]) == 0
        out = capsys.readouterr().out
        assert f"Cluster is up again at http://127.0.0.1:{port} (master restarted; 1 running" in out

        after = json.loads((state / "cluster.json").read_text())
        assert after["agents"] == before["agents"]  # the same agent process: nothing killed
        assert after["master"]["pid"] != before["master"]["pid"]
        assert after["cluster_id"] == before["cluster_id"]
        api = _api(port, state)
        task = api.wait_ended(task_id, timeout=TICKS * 0.5 + 60)
        (ended,) = task["allocations"]
        assert ended["allocationId"] == allocation["allocationId"]
        assert ended["exitCode"] == 0, ended["exitReason"]
        ticks = [line for line in api.task_output(task_id) if line.startswith("tick ")]
        assert ticks[-1] == f"tick {TICKS}"
    finally:
        main(["deploy", "local", "cluster-down"])
