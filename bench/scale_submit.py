"""Submissions, scheduler passes and agent listings at scale, against a real master.

    .venv/bin/python -m bench.scale_submit [--db postgresql|sqlite] [--agents 2000] \\
        [--slots 8] [--commands 10000] [--clients 64] [--json out.json] [--master-log PATH]

A real master (``det-master``, a subprocess) on a throwaway database (PostgreSQL by default: a
fresh database on 127.0.0.1:5432, dropped afterwards; ``--db sqlite``: a file), ``--agents``
fake agents of ``--slots`` slots each (``bench/fake_agents.py``, the real protocol, in a child
process of their own so the clients do not share their event loop), then ``--clients`` clients
submitting ``--commands`` one-slot commands (``POST /api/v1/commands``, a trivial argv the fake
agents never run) as fast as the master answers. Reported:

- submissions/s and submit latency p50/p99 (each client's POST to its reply);
- seconds from the first POST until every command started (the agents' ``allocation_started``
  sent) and ended (every ``allocation_exited`` sent and the master's queue empty);
- the scheduler's pass time p50/p99, events per pass and event-loop lag p50/p99 as
  ``GET /debug/scheduler`` reports them at the end (absent on a master without it);
- ``GET /api/v1/agents`` latency p50/p99 over 50 sequential requests with every agent joined.

Targets (issue 15, PostgreSQL, 2,000 x 8 agents, 10,000 commands, 64 clients): all started and
ended within 60 s, >= 500 submissions/s, submit p99 <= 200 ms, pass p99 <= 50 ms, loop lag p99
<= 20 ms, /api/v1/agents p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg2

from bench.fake_agents import FakeAgents
from tests.integration.cluster import JOIN_TOKEN, Master, wait_for

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
AGENTS_REQUESTS = 50
COMMAND_CONFIG = {"entrypoint": ["true"], "resources": {"slots": 1}}
TRANSPORT_RETRIES = 3
END_TIMEOUT = 600.0  # seconds to wait for every command to end before giving up


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def throwaway_database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'flotilla.db'}"
        return
    name = f"flotilla_bench_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _agents_process(
    url: str,
    count: int,
    slots: int,
    joined: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    started: Any,
    exited: Any,
    connect_seconds: Any,
) -> None:
    async def serve() -> None:
        async with FakeAgents(url, JOIN_TOKEN, count, slots) as agents:
            connect_seconds.value = agents.connect_seconds
            joined.set()
            while not stop.is_set():
                started.value, exited.value = agents.started, agents.exited
                failed = agents.failures()
                if failed:
                    raise RuntimeError(f"{len(failed)} fake agents failed: {failed[0]!r}")
                await asyncio.sleep(0.05)

    asyncio.run(serve())


async def _submit_all(url: str, token: str, commands: int, clients: int) -> tuple[list[float], int]:
    """Each client POSTs until none are left, on a connection of its own (one httpx client
    each: httpcore's pool looks over every connection it holds per request, which with one
    shared pool of 64 cost the benchmark more CPU than the master); a connection the server
    dropped (uvicorn closes a keep-alive connection idle 5 s, and a reply can be that late
    under load) is retried on a new one, counted in the second value (a retried command may
    then exist twice)."""
    latencies: list[float] = []
    retries = 0
    left = iter(range(commands))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client() -> None:
        nonlocal retries
        async with httpx.AsyncClient(
            base_url=url, headers=headers, timeout=120, limits=limits
        ) as http:
            for _ in left:
                began = time.perf_counter()
                for attempt in range(TRANSPORT_RETRIES + 1):
                    try:
                        response = await http.post(
                            "/api/v1/commands", json={"config": COMMAND_CONFIG}
                        )
                        break
                    except httpx.TransportError:
                        if attempt == TRANSPORT_RETRIES:
                            raise
                        retries += 1
                latencies.append(time.perf_counter() - began)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"submit: HTTP {response.status_code}: {response.text[:300]}"
                    )

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, retries


def _debug(http: httpx.Client) -> dict[str, Any] | None:
    response = http.get("/debug/scheduler")
    return response.json() if response.status_code == 200 else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="scale-submit-") as tmp:
        workdir = Path(tmp)
        with throwaway_database(args.db, workdir) as db_url:
            master = Master(workdir, db_url, agent_ping_interval="5s", agent_ping_timeout="60s")
            master.start()
            try:
                return _measure(args, master)
            except BaseException:
                lines = master.log_path.read_text().splitlines()
                errors = [
                    i for i, line in enumerate(lines) if "ERROR" in line or "Traceback" in line
                ]
                shown = lines[errors[0] : errors[0] + 60] if errors else lines[-30:]
                print("\n".join(shown), file=sys.stderr)
                raise
            finally:
                master.stop()
                if args.master_log is not None:
                    shutil.copyfile(master.log_path, args.master_log)


def _measure(args: argparse.Namespace, master: Master) -> dict[str, Any]:
    http = httpx.Client(base_url=master.url, timeout=60)
    token = http.post("/api/v1/auth/login", json={"username": "admin", "password": ""}).json()[
        "token"
    ]
    http.headers["Authorization"] = f"Bearer {token}"
    ctx = multiprocessing.get_context("spawn")
    joined, stop = ctx.Event(), ctx.Event()
    started, exited = ctx.Value("l", 0), ctx.Value("l", 0)
    connect_seconds = ctx.Value("d", 0.0)
    agents = ctx.Process(
        target=_agents_process,
        args=(master.url, args.agents, args.slots, joined, stop, started, exited, connect_seconds),
        daemon=True,
    )
    agents.start()
    try:
        while not joined.wait(0.5):
            if not agents.is_alive():
                raise RuntimeError("the fake agents' process died while joining")
        wait_for(
            f"{args.agents} agents listed",
            lambda: (
                len(http.get("/api/v1/agents", params={"limit": 0}).json()["agents"]) >= args.agents
            ),
            timeout=120,
        )
        agents_ms = []
        for _ in range(AGENTS_REQUESTS):
            began = time.perf_counter()
            http.get("/api/v1/agents").raise_for_status()
            agents_ms.append((time.perf_counter() - began) * 1e3)

        began = time.perf_counter()
        latencies, retries = asyncio.run(
            _submit_all(master.url, token, args.commands, args.clients)
        )
        submitted_s = time.perf_counter() - began
        all_started_s = all_ended_s = float("nan")
        deadline = time.monotonic() + END_TIMEOUT
        while time.monotonic() < deadline and agents.is_alive():
            now = time.perf_counter() - began
            if started.value >= args.commands and all_started_s != all_started_s:
                all_started_s = now
            if exited.value >= args.commands:
                debug = _debug(http)
                if (
                    debug is None
                    or debug["allocations"]["queued"] + debug["allocations"]["running"] == 0
                ):
                    all_ended_s = now
                    break
            time.sleep(0.05)
        debug = _debug(http)
    finally:
        stop.set()
        agents.join(30)
        if agents.is_alive():
            agents.kill()
    result: dict[str, Any] = {
        "db": args.db,
        "agents": args.agents,
        "slots": args.slots,
        "commands": args.commands,
        "clients": args.clients,
        "agents_joined_s": round(connect_seconds.value, 2),
        "submissions_per_s": round(args.commands / submitted_s, 1),
        "submit_p50_ms": round(percentile(latencies, 0.5) * 1e3, 1),
        "submit_p99_ms": round(percentile(latencies, 0.99) * 1e3, 1),
        "submit_retries": retries,
        "all_started_s": round(all_started_s, 2),
        "all_ended_s": round(all_ended_s, 2),
        "started": started.value,
        "exited": exited.value,
        "agents_list_p50_ms": round(statistics.median(agents_ms), 1),
        "agents_list_p99_ms": round(percentile(agents_ms, 0.99), 1),
    }
    if debug is not None:
        result["scheduler"] = debug
    return result


def _table(result: dict[str, Any]) -> None:
    rows = [
        ("database", result["db"]),
        ("agents x slots", f"{result['agents']} x {result['slots']}"),
        ("commands / clients", f"{result['commands']} / {result['clients']}"),
        ("agents joined in", f"{result['agents_joined_s']} s"),
        ("submissions/s", result["submissions_per_s"]),
        ("submit p50 / p99", f"{result['submit_p50_ms']} / {result['submit_p99_ms']} ms"),
        ("submits retried (dropped connection)", result["submit_retries"]),
        ("all started after", f"{result['all_started_s']} s"),
        ("all ended after", f"{result['all_ended_s']} s"),
        (
            "/api/v1/agents p50 / p99",
            f"{result['agents_list_p50_ms']} / {result['agents_list_p99_ms']} ms",
        ),
    ]
    debug = result.get("scheduler")
    if debug is not None:
        passes = debug["passes"]
        lag = debug["loopLag"]
        rows += [
            ("scheduler passes", passes["count"]),
            (
                "pass p50 / p99 / max",
                f"{passes['p50Ms']} / {passes['p99Ms']} / {passes['maxMs']} ms",
            ),
            ("pass transaction p50 / p99", f"{passes['flushP50Ms']} / {passes['flushP99Ms']} ms"),
            ("events per pass (mean / max)", f"{passes['eventsMean']} / {passes['eventsMax']}"),
            (
                "event-loop lag p50 / p99 / max",
                f"{lag['p50Ms']} / {lag['p99Ms']} / {lag['maxMs']} ms",
            ),
        ]
    for name, value in rows:
        print(f"  {name:<30} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--agents", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--commands", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--master-log", type=Path, help="keep the master's log here")
    args = parser.parse_args()
    result = run(args)
    _table(result)
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
