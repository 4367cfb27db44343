"""The master's memory while anonymous clients send huge bodies. Real master process (SQLite),
loopback.

    .venv/bin/python -m bench.security_bodies [--clients 8] [--megabytes 50]

``--clients`` concurrent unauthenticated POSTs of ``--megabytes`` MB each, half with a declared
``Content-Length`` and half streamed in 1 MiB chunks, spread over a JSON route
(``/api/v1/users``) and the context-upload routes (``/api/v1/commands``,
``/api/v1/experiments``). The master's RSS (psutil) is sampled every 20 ms from before the first
request to after the last answer; the peak minus the starting value is the growth.

Target (issue 10): growth <= 20 MiB for eight 50 MB bodies.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from tests.integration.cluster import Master

MIB = 2**20
ROUTES = ("/api/v1/users", "/api/v1/commands", "/api/v1/experiments")


def send(url: str, size: int, streamed: bool, outcomes: Counter[str], lock: threading.Lock) -> None:
    payload = b"x" * size

    def chunks() -> Iterator[bytes]:
        for offset in range(0, size, MIB):
            yield payload[offset : offset + MIB]

    try:
        with httpx.Client(timeout=120) as client:
            response = client.post(url, content=chunks() if streamed else payload)
        outcome = str(response.status_code)
    except httpx.TransportError as exc:  # the master closed the connection mid-upload
        outcome = type(exc).__name__
    with lock:
        outcomes[outcome] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--megabytes", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        master = Master(workdir, f"sqlite:///{workdir / 'flotilla.db'}")
        master.start()
        try:
            assert master.proc is not None
            process = psutil.Process(master.proc.pid)
            httpx.get(f"{master.url}/api/v1/info").raise_for_status()
            before = peak = process.memory_info().rss
            outcomes: Counter[str] = Counter()
            lock = threading.Lock()
            threads = [
                threading.Thread(
                    target=send,
                    args=(
                        master.url + ROUTES[i % len(ROUTES)],
                        args.megabytes * 10**6,
                        i % 2 == 1,
                        outcomes,
                        lock,
                    ),
                )
                for i in range(args.clients)
            ]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
            after = process.memory_info().rss
            print(
                f"{args.clients} x {args.megabytes} MB unauthenticated: RSS {before / MIB:.0f} MiB "
                f"-> peak {peak / MIB:.0f} MiB (+{(peak - before) / MIB:.1f} MiB), "
                f"after {after / MIB:.0f} MiB; all answered in {elapsed:.2f} s; {dict(outcomes)}"
            )
        finally:
            master.stop()


if __name__ == "__main__":
    main()
