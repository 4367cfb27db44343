"""CloudWatch log shipping: end-to-end throughput from an agent's logging handler to a moto
server, and the time the handler adds to one logging call.

    .venv/bin/python -m bench.cloudwatch_throughput [--lines 200000] [--rounds 5]

moto runs as its own process (``python -m moto.server``), as CloudWatch would be elsewhere,
so the numbers are the shipping process's: the handler, the spool writer, the batcher,
botocore's serialisation and HTTP. Every line is read back from moto and checked (count,
order) before a number is reported. Target: >= 50,000 lines/s end to end.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agent.cloudwatch.config import CloudWatchConfig
from agent.cloudwatch.handler import CloudWatchHandler, ProcessShipping, ship_process_logs
from agent.cloudwatch.shipper import Shipper
from agent.cloudwatch.spool import Spool

TARGET_LINES_PER_SECOND = 50_000
GROUP = "/flotilla/bench"
STREAM = "agent/bench-0"
FLUSH_TIMEOUT = 600.0
OVERHEAD_CALLS = 50_000  # logging calls per overhead measurement


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def read_back(shipper: Shipper, stream: str) -> list[str]:
    messages: list[str] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"logGroupName": GROUP, "logStreamName": stream}
        kwargs |= {"nextToken": token} if token else {"startFromHead": True}
        page = shipper.client.get_log_events(**kwargs)
        messages += [event["message"] for event in page["events"]]
        if page["nextForwardToken"] == token:
            return messages
        token = page["nextForwardToken"]


def bench_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def end_to_end(endpoint: str, spool: Path, lines: int, stream: str) -> dict[str, float]:
    """Log ``lines`` lines as fast as one thread can; time until CloudWatch has them all."""
    config = CloudWatchConfig(type="cloudwatch", region="us-east-1", endpoint_url=endpoint)
    shipping = ship_process_logs(config, spool, stream, GROUP, owns_group=True, loggers=())
    logger = bench_logger(f"bench.e2e.{stream}")
    logger.addHandler(shipping.handler)
    try:
        start = time.perf_counter()
        for number in range(lines):
            logger.info("step %d loss 0.25 lr 0.001 samples/s 1234.5", number)
        logged = time.perf_counter()
        if not shipping.shipper.flush(FLUSH_TIMEOUT):
            raise SystemExit(f"not all lines shipped: {shipping.shipper.describe()}")
        shipped = time.perf_counter()
        counters = shipping.shipper.counters
        messages = read_back(shipping.shipper, stream)
    finally:
        logger.removeHandler(shipping.handler)
        shipping.stop()
    text = "step {} loss 0.25 lr 0.001 samples/s 1234.5"
    expected = [f"INFO {logger.name}: " + text.format(n) for n in range(lines)]
    if messages != expected or counters.shipped != lines or counters.lost or counters.dropped:
        raise SystemExit(f"lines went missing or out of order: {counters}")
    return {
        "lines_per_second": lines / (shipped - start),
        "logging_lines_per_second": lines / (logged - start),
        "seconds": shipped - start,
    }


def call_overhead(shipping: ProcessShipping, spool: Path, rounds: int) -> dict[str, float]:
    """Median microseconds per ``logger.info`` call: with a NullHandler only; with the
    CloudWatch handler in front of a shipper that is not started (the call's own cost: format
    and queue); and with a running shipper (its threads writing the spool and shipping take
    their share of the same interpreter)."""

    def per_call(handler: logging.Handler) -> float:
        logger = bench_logger(f"bench.overhead.{id(handler)}")
        logger.addHandler(handler)
        start = time.perf_counter()
        for number in range(OVERHEAD_CALLS):
            logger.info("step %d loss %.3f", number, 0.25)
        elapsed = time.perf_counter() - start
        logger.removeHandler(handler)
        return elapsed / OVERHEAD_CALLS * 1e6

    bare, queued, running = [], [], []
    for _ in range(rounds):
        bare.append(per_call(logging.NullHandler()))
        idle = Shipper(Spool(spool), None, GROUP, retention_days=None, owns_group=False)
        queued.append(per_call(CloudWatchHandler(idle, STREAM)))
        running.append(per_call(shipping.handler))
        shipping.shipper.flush(FLUSH_TIMEOUT)  # each round starts with an empty queue
    return {
        "bare_us": statistics.median(bare),
        "queued_us": statistics.median(queued),
        "running_us": statistics.median(running),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines per end-to-end run")
    parser.add_argument("--rounds", type=int, default=5, help="end-to-end runs and overhead rounds")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    moto, endpoint = start_moto()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [
                end_to_end(endpoint, Path(tmp) / f"spool-{n}", args.lines, f"{STREAM}-{n}")
                for n in range(args.rounds)
            ]
            config = CloudWatchConfig(type="cloudwatch", region="us-east-1", endpoint_url=endpoint)
            shipping = ship_process_logs(
                config, Path(tmp) / "spool-overhead", STREAM, GROUP, owns_group=True, loggers=()
            )
            try:
                overhead = call_overhead(shipping, Path(tmp) / "spool-idle", args.rounds)
            finally:
                shipping.stop()
    finally:
        moto.terminate()
        moto.wait(10)
    rates = sorted(run["lines_per_second"] for run in runs)
    median = statistics.median(rates)
    print(f"end to end, {args.lines:,} lines x {args.rounds} runs, one logging thread:")
    print(f"  median {median:,.0f} lines/s (min {rates[0]:,.0f}, max {rates[-1]:,.0f})")
    logging_rates = [run["logging_lines_per_second"] for run in runs]
    print(f"  logging calls alone: median {statistics.median(logging_rates):,.0f} lines/s")
    print(f"per logging call, median of {args.rounds} x {OVERHEAD_CALLS:,} calls:")
    bare = overhead["bare_us"]
    print(f"  NullHandler only {bare:.2f} us")
    queued, running = overhead["queued_us"], overhead["running_us"]
    print(f"  CloudWatchHandler, format + queue: {queued:.2f} us (+{queued - bare:.2f})")
    print(f"  CloudWatchHandler, shipper running: {running:.2f} us (+{running - bare:.2f})")
    verdict = "meets" if median >= TARGET_LINES_PER_SECOND else "MISSES"
    print(f"{verdict} the target of {TARGET_LINES_PER_SECOND:,} lines/s")


if __name__ == "__main__":
    main()
