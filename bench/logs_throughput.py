"""Task logs at scale: how many lines a master stores per second from agents' ``log_batch``
messages, and how fast ``GET /api/v1/tasks/{id}/logs`` reads a long log back.

    .venv/bin/python -m bench.logs_throughput [--db postgresql|sqlite] [--agents 1]
        [--lines 100000] [--batch 1000]

A real master (``det-master`` subprocess on a free loopback port; PostgreSQL by default, a
throwaway database dropped afterwards) and ``--agents`` fake agents in this process, each one
WebSocket speaking the real protocol through ``agent.protocol``'s models. Each fake agent says
hello with one CPU slot; the benchmark submits one command per agent through the REST API
(``POST /api/v1/commands``), the master places it and sends ``start_allocation``, and the fake
agent answers ``allocation_started`` — the honest cheapest way to a running allocation the master
accepts logs for (no process runs). Then every agent sends ``--lines`` lines in ``log_batch``es of
``--batch`` lines (what the real agent sends at most per batch), then ``allocation_exited``. The
master stores each batch before it reads the next frame and records the exit after the logs, so
the clock stops when every task has ended: *stored lines/s* = all lines / (the master's last
``endTime`` − the first send; one clock, one machine).
Frames are encoded before the clock starts (the agent's JSON encoding is the agent's CPU, not the
master's).

Then one task's log (``--lines`` lines plus the master's own few) is read back through the REST
route, the whole NDJSON stream consumed by httpx: *read lines/s*, best of ``--reads``.

Also printed: the master process's CPU time per line (user + system, from ``/proc``) while
storing and while reading — the figure that holds on a machine other work keeps busy, where
the wall-clock rates measure the neighbours as much as the master. PostgreSQL's own CPU is not
in it.

Works against older protocol versions too (fields are set only where the models have them), so
the same file measures ``main`` as "before".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import yaml
from websockets.asyncio.client import connect

from agent import protocol

PG_ADMIN_URL = os.environ.get(
    "FLOTILLA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
JOIN_TOKEN = "bench-join-token"
END_POLL_SECONDS = 0.25
ended: list[datetime] = []  # the tasks' end times, as the master recorded them
BIN = Path(sys.executable).parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fields(model: type[Any], **values: Any) -> dict[str, Any]:
    """Only the values ``model`` knows, so one bench speaks every protocol version."""
    return {k: v for k, v in values.items() if k in model.model_fields}


class FakeAgent:
    """One agent's socket: hello, start what it is given, send logs, exit."""

    def __init__(self, url: str, agent_id: str) -> None:
        self.ws_url = url.replace("http://", "ws://") + protocol.AGENT_WS_PATH
        self.agent_id = agent_id
        self.seq = 0
        self.started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.ended: asyncio.Future[None] | None = None

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    async def run(self, lines: int, batch: int, go: asyncio.Event) -> None:
        async with connect(
            self.ws_url,
            additional_headers={"Authorization": f"Bearer {JOIN_TOKEN}"},
            ping_interval=None,
            max_size=None,
        ) as ws:
            hello = protocol.Hello(
                **_fields(
                    protocol.Hello,
                    agent_id=self.agent_id,
                    version="bench",
                    resource_pool="default",
                    slots=[protocol.SlotInfo(id=0, type=protocol.DeviceType.CPU)],
                    boot_id=uuid.uuid4().hex,
                    booted_at=datetime.now(UTC),
                )
            )
            await ws.send(hello.model_dump_json())
            welcome = protocol.MasterMessageAdapter.validate_json(await ws.recv())
            assert isinstance(welcome, protocol.Welcome), welcome
            reader = asyncio.create_task(self._read(ws))
            allocation_id = await self.started
            now = datetime.now(UTC)
            started = protocol.AllocationStarted(
                **_fields(
                    protocol.AllocationStarted,
                    allocation_id=allocation_id,
                    pid=1,
                    started_at=now,
                    seq=self._next(),
                )
            )
            await ws.send(started.model_dump_json())
            frames = []
            for first in range(0, lines, batch):
                entries = [
                    protocol.LogEntry(
                        timestamp=now,
                        stdtype="stdout",
                        line=f"[rank 0] step {i:>7}: loss=0.{i % 9973:04d} lr=0.001 "
                        f"throughput=1234.5 samples/s",
                    )
                    for i in range(first, min(lines, first + batch))
                ]
                message = protocol.LogBatch(
                    **_fields(
                        protocol.LogBatch,
                        allocation_id=allocation_id,
                        entries=entries,
                        seq=self._next(),
                    )
                )
                frames.append(message.model_dump_json())
            exited = protocol.AllocationExited(
                **_fields(
                    protocol.AllocationExited,
                    allocation_id=allocation_id,
                    exit_code=0,
                    ended_at=datetime.now(UTC),
                    seq=self._next(),
                )
            )
            frames.append(exited.model_dump_json())
            await go.wait()
            for frame in frames:
                await ws.send(frame)
            assert self.ended is not None
            await self.ended
            reader.cancel()

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "start_allocation" and not self.started.done():
                self.started.set_result(message["allocation_id"])
            elif message["type"] == "ping":
                pong = protocol.Pong(seq=message["seq"])
                await ws.send(pong.model_dump_json())


async def _until_ended(http: httpx.AsyncClient, task_id: str) -> None:
    """Poll slowly (each poll costs the master CPU the figures should not include); the end
    time that counts is the master's own ``endTime``."""
    while True:
        task = (await http.get(f"/api/v1/tasks/{task_id}")).json()["task"]
        if task["endTime"]:
            ended.append(datetime.fromisoformat(task["endTime"].replace("Z", "+00:00")))
            return
        await asyncio.sleep(END_POLL_SECONDS)


async def ingest(
    url: str, pid: int, agents: int, lines: int, batch: int
) -> tuple[float, float, list[str]]:
    """Stored lines/s, the master's CPU seconds while storing, and the tasks."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        login = await http.post("/api/v1/auth/login", json={"username": "admin", "password": ""})
        http.headers["Authorization"] = f"Bearer {login.json()['token']}"
        fakes = [FakeAgent(url, f"bench-agent-{i}") for i in range(agents)]
        go = asyncio.Event()
        runs = [asyncio.create_task(f.run(lines, batch, go)) for f in fakes]
        while len((await http.get("/api/v1/agents")).json()["agents"]) < agents:
            await asyncio.sleep(0.05)
        task_ids = []
        for _ in fakes:
            reply = await http.post("/api/v1/commands", json={"config": {"entrypoint": ["true"]}})
            reply.raise_for_status()
            task_ids.append(reply.json()["command"]["id"])
        await asyncio.gather(*(f.started for f in fakes))
        await asyncio.sleep(0.5)  # every frame encoded and waiting for `go`
        for fake, task_id in zip(fakes, task_ids, strict=True):
            fake.ended = asyncio.create_task(_until_ended(http, task_id))
        cpu = cpu_seconds(pid)
        begin = datetime.now(UTC)
        go.set()
        await asyncio.gather(*runs)
        cpu = cpu_seconds(pid) - cpu
        return agents * lines / (max(ended) - begin).total_seconds(), cpu, task_ids


def read_back(url: str, task_id: str, reads: int) -> tuple[float, int]:
    with httpx.Client(base_url=url, timeout=300) as http:
        login = http.post("/api/v1/auth/login", json={"username": "admin", "password": ""})
        http.headers["Authorization"] = f"Bearer {login.json()['token']}"
        rates = []
        count = 0
        for _ in range(reads):
            begin = time.perf_counter()
            with http.stream("GET", f"/api/v1/tasks/{task_id}/logs") as response:
                response.raise_for_status()
                count = sum(1 for line in response.iter_lines() if line)
            rates.append(count / (time.perf_counter() - begin))
        return max(rates), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--lines", type=int, default=100_000, help="log lines per agent")
    parser.add_argument("--batch", type=int, default=1000, help="lines per log_batch")
    parser.add_argument("--reads", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    pg_name = f"flotilla_bench_{uuid.uuid4().hex[:10]}"
    if args.db == "postgresql":
        admin = psycopg2.connect(PG_ADMIN_URL)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{pg_name}"')
        db_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{pg_name}"
    else:
        db_url = f"sqlite:///{workdir / 'flotilla.db'}"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    config = {
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(workdir / "data"),
        "db": {"url": db_url},
        "agent_join_token": JOIN_TOKEN,
        # Generous: on a loaded machine a starved link must not end the run.
        "agent_ping_timeout": "120s",
        "log_level": os.environ.get("BENCH_MASTER_LOG_LEVEL", "WARNING"),
    }
    (workdir / "master.yaml").write_text(yaml.safe_dump(config))
    log = (workdir / "master.log").open("wb")
    # The master of this source tree, whatever tree the shared venv's console script points at.
    tree = str(Path(__file__).resolve().parents[1])
    master = subprocess.Popen(
        [str(BIN / "det-master"), "--config", str(workdir / "master.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": tree},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/info", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or master.poll() is not None:
                sys.exit(f"the master did not start; see {workdir / 'master.log'}")
            time.sleep(0.1)
        stored, store_cpu, task_ids = asyncio.run(
            ingest(url, master.pid, args.agents, args.lines, args.batch)
        )
        cpu = cpu_seconds(master.pid)
        read, count = read_back(url, task_ids[0], args.reads)
        read_cpu = cpu_seconds(master.pid) - cpu
    finally:
        master.terminate()
        master.wait(30)
        if args.db == "postgresql":
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
            admin.close()
    load = os.getloadavg()
    print(
        f"db={args.db} agents={args.agents} lines/agent={args.lines} batch={args.batch}: "
        f"stored {stored:,.0f} lines/s; read {count:,} lines at {read:,.0f} lines/s "
        f"(best of {args.reads}); master CPU per line: store "
        f"{store_cpu / (args.agents * args.lines) * 1e6:.1f} us, read "
        f"{read_cpu / (count * args.reads) * 1e6:.1f} us; "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


if __name__ == "__main__":
    main()
