"""How fast an elastic pool reacts: from a command being queued to the provider's launch call,
to its agent joining, to the command running. Local provider, real master and agent processes.

    .venv/bin/python -m bench.launch_latency [--rounds 5]

Each round starts a fresh master (SQLite) whose pool has no agent, submits one command, and
reads the times from the pool's instance events and the task's allocation. Target: the launch
call within 1 s of the demand appearing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

BIN = Path(sys.executable).parent
TARGET_LAUNCH_SECONDS = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: object, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()  # type: ignore[operator]
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError("the cluster did not get there in time")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def one_round(workdir: Path) -> tuple[float, float, float]:
    port = _free_port()
    config = {
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(workdir / "data"),
        "agent_join_token": "bench",
        "resource_pools": [
            {
                "pool_name": "default",
                "provider": {"type": "local", "max_instances": 1, "provisioning_tick": "10s"},
            }
        ],
    }
    (workdir / "master.yaml").write_text(yaml.safe_dump(config))
    log = (workdir / "master.log").open("wb")
    master = subprocess.Popen(
        [str(BIN / "det-master"), "--config", str(workdir / "master.yaml")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: httpx.get(f"{url}/info").status_code == 200)
        http = httpx.Client(base_url=url)
        token = http.post("/api/v1/auth/login", json={"username": "admin"}).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        time.sleep(1.0)  # let the first (empty) pass go by, as on a cluster at rest
        command = http.post("/api/v1/commands", json={"config": {"entrypoint": "true"}}).json()
        task_id = command["command"]["id"]
        queued = _time(command["command"]["registeredTime"])
        task = _wait(
            lambda: (t := http.get(f"/api/v1/tasks/{task_id}").json()["task"])["endTime"] and t
        )
        events = http.get("/api/v1/resource-pools/default/events").json()["events"]
        requested = min(_time(e["time"]) for e in events if e["kind"] == "requested")
        agents = http.get("/api/v1/agents").json()["agents"]
        joined = min(_time(a["registeredTime"]) for a in agents)
        started = _time(task["allocations"][0]["startTime"])  # type: ignore[index]
        return (
            (requested - queued).total_seconds(),
            (joined - queued).total_seconds(),
            (started - queued).total_seconds(),
        )
    finally:
        os.killpg(master.pid, signal.SIGTERM)
        master.wait(15)
        for state in (workdir / "data" / "provisioner").glob("*/instances.json"):
            for item in json.loads(state.read_text()):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(item["pid"]), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_round(Path(tmp)))
    launch, joined, running = (statistics.median(column) for column in zip(*rows, strict=True))
    print(f"rounds: {args.rounds}")
    print(f"queued -> launch call:   median {launch:.3f} s, max {max(r[0] for r in rows):.3f} s")
    print(f"queued -> agent joined:  median {joined:.3f} s")
    print(f"queued -> task running:  median {running:.3f} s")
    verdict = "met" if max(r[0] for r in rows) <= TARGET_LAUNCH_SECONDS else "MISSED"
    print(f"target (launch call <= {TARGET_LAUNCH_SECONDS:g} s): {verdict}")


if __name__ == "__main__":
    main()
