"""Metrics ingest: how many training-metrics reports a master stores per second from many
trials reporting at once, and how long each request takes (issue 15, "Ingest that scales").

    .venv/bin/python -m bench.metrics_ingest [--trials 50] [--seconds 20] [--db postgresql|sqlite]
        [--rate 5000]

A real master (subprocess, ``det-master``) on a fresh database (a throwaway PostgreSQL database
by default, or a SQLite file). ``--trials`` experiments (single searcher) are created over REST
with no agent, so each trial's allocation stays queued; the benchmark then issues each queued
allocation its token through the master's own ``auth.issue_token`` (the credential the
scheduler would hand the trial at launch; the trial process itself is not started: nothing but
its reports is measured). Each trial is one ``harness.core.api.TrialAPI`` (the harness's own
REST layer, so its queue and batching count) in a thread, calling ``report_metrics`` in a loop
as fast as the TrialAPI lets it (it blocks when its queue, ``--queue`` long, is full), over
``--procs`` client processes. After ``--seconds`` each flushes; the result is the rows the
master stored (counted in the database) per second of the run, and the p50/p99 of every HTTP
request the TrialAPIs made (a request carries one report on ``main``, many with batching).

That closed loop measures the master's capacity, but not its latency: every trial always has a
request in flight, so a request waits for the other 49 (Little's law: p50 is about 50 requests'
service time, whatever the master does). ``--rate`` offers a fixed total rate instead, each trial
reporting at ``rate / trials`` per second as a trial training at its own pace does: the question
"are 5,000 reports/s stored, each request answered within 100 ms" is then asked directly.

Target (2 cores, PostgreSQL): >= 5,000 reports/s from 50 trials, request p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import yaml
from sqlalchemy import func, select

from harness.client import MasterClient
from harness.core.api import TrialAPI
from master import auth, models
from master.db import Database
from tests.integration.cluster import Api, Master

PG_ADMIN_URL = os.environ.get(
    "FLOTILLA_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
TRIAL_SCRIPT = "print('never started: the benchmark only sends its reports')\n"


def experiment_body(index: int) -> dict[str, Any]:
    import base64

    config = {
        "name": f"ingest {index}",
        "entrypoint": "python trial.py",
        "searcher": {"name": "single", "metric": "loss", "max_length": {"batches": 10**9}},
        "hyperparameters": {},
        "max_restarts": 0,
    }
    content = base64.b64encode(TRIAL_SCRIPT.encode()).decode()
    files = [{"path": "trial.py", "type": 48, "content": content, "mtime": 0}]
    return {"config": yaml.safe_dump(config), "modelDefinition": files}


def queued_trials(db_url: str, count: int, timeout: float = 60.0) -> list[tuple[int, str, str]]:
    """``(trial id, task id, allocation id)`` of ``count`` trials whose allocation is stored and
    not ended (waits for the master to have stored them)."""
    db = Database(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with db.session() as session:
                rows = session.execute(
                    select(models.Task.id, models.Task.config, models.Allocation.id)
                    .join(models.Allocation, models.Allocation.task_id == models.Task.id)
                    .where(models.Task.task_type == "TRIAL", models.Allocation.ended_at.is_(None))
                ).all()
            found = [(int(config["trial_id"]), task, alloc) for task, config, alloc in rows]
            if len(found) >= count:
                return sorted(found)[:count]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} trials got an allocation")
            time.sleep(0.2)
    finally:
        db.close()


def issue_tokens(db_url: str, allocations: list[str], owner: str = "admin") -> list[str]:
    """A task token per allocation, issued as the scheduler issues them at launch."""
    db = Database(db_url)
    now = datetime.now(UTC)
    try:
        with db.session() as session:
            owner_id = session.scalars(
                select(models.User.id).where(models.User.username == owner)
            ).one()
            return [
                auth.issue_token(session, owner_id, timedelta(hours=1), now, allocation_id=a)
                for a in allocations
            ]
    finally:
        db.close()


class TimedClient(MasterClient):
    """A MasterClient that records how long each POST took."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []

    def post(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().post(*args, **kwargs)
        finally:
            self.durations.append(time.perf_counter() - started)


def _client_process(
    url: str,
    trials: list[tuple[int, str, str, str]],
    seconds: float,
    queue_size: int,
    out: Any,
    interval: float = 0.0,
) -> None:
    """Report from each of ``trials`` (trial id, task id, allocation id, token) for
    ``seconds``, one report every ``interval`` seconds per trial (0: as fast as the TrialAPI
    lets it); puts (reports made, request durations) on ``out``."""
    durations: list[float] = []
    made = [0]
    span = [float("inf"), 0.0]  # wall-clock start and end of the reporting
    lock = threading.Lock()
    start = threading.Barrier(len(trials))

    def run(trial_id: int, task_id: str, allocation_id: str, token: str) -> None:
        client = TimedClient(url, token)
        api = TrialAPI(
            client,
            trial_id=trial_id,
            trial_run_id=1,
            task_id=task_id,
            allocation_id=allocation_id,
            queue_size=queue_size,
        )
        start.wait()
        with lock:
            span[0] = min(span[0], time.time())
        began = time.monotonic()
        deadline = began + seconds
        step = 0
        try:
            while time.monotonic() < deadline:
                if interval:  # an open loop: the trial trains at its own pace
                    time.sleep(max(0.0, began + step * interval - time.monotonic()))
                api.report_metrics("training", step + 1, {"loss": 1.0 / (step + 1), "acc": 0.5})
                step += 1
            api.close()
        finally:
            client.close()
            with lock:
                made[0] += step
                durations.extend(client.durations)
                span[1] = max(span[1], time.time())

    threads = [threading.Thread(target=run, args=trial) for trial in trials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((made[0], durations, span))


def stored_metrics(db_url: str) -> int:
    db = Database(db_url)
    try:
        with db.session() as session:
            return int(session.scalar(select(func.count()).select_from(models.TrialMetrics)) or 0)
    finally:
        db.close()


def fresh_database(kind: str, workdir: Path) -> tuple[str, str | None]:
    """A database URL and (PostgreSQL) the name to drop afterwards."""
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'flotilla.db'}", None
    name = f"flotilla_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN_URL.replace("+psycopg2", ""))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", name


def drop_database(name: str) -> None:
    admin = psycopg2.connect(PG_ADMIN_URL.replace("+psycopg2", ""))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# The master subprocess runs this tree's code (``det-master`` alone would import the tree the
# shared virtualenv was installed from).
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--queue",
        type=int,
        default=100,
        help="each TrialAPI's queue bound (the harness's is 1,000; smaller keeps the final "
        "flush short on a slow master)",
    )
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="reports/s offered by all trials together, evenly (an open loop, as trials that "
        "train at their own pace); 0 (default): every trial reports as fast as it can (a "
        "closed loop at saturation, where a request's latency is the master's backlog)",
    )
    args = parser.parse_args(argv)
    interval = args.trials / args.rate if args.rate else 0.0

    with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
        workdir = Path(tmp)
        db_url, pg_name = fresh_database(args.db, workdir)
        master = Master(workdir, db_url, env={"PYTHONPATH": str(ROOT)})
        try:
            master.start()
            api = Api(master)
            for index in range(args.trials):
                created = api.post("/api/v1/experiments", json=experiment_body(index))
                assert created.status_code == 200, created.text
            trials = queued_trials(db_url, args.trials)
            tokens = issue_tokens(db_url, [alloc for _, _, alloc in trials])
            work = [(t, task, a, tok) for (t, task, a), tok in zip(trials, tokens, strict=True)]
            before = stored_metrics(db_url)
            out: Any = multiprocessing.get_context("spawn").Queue()
            procs = [
                multiprocessing.get_context("spawn").Process(
                    target=_client_process,
                    args=(
                        master.url,
                        work[i :: args.procs],
                        args.seconds,
                        args.queue,
                        out,
                        interval,
                    ),
                )
                for i in range(args.procs)
            ]
            for proc in procs:
                proc.start()
            results = [out.get(timeout=args.seconds + 600) for _ in procs]
            for proc in procs:
                proc.join()
            elapsed = max(r[2][1] for r in results) - min(r[2][0] for r in results)
            stored = stored_metrics(db_url) - before
        finally:
            master.stop()
            if pg_name is not None:
                drop_database(pg_name)
    made = sum(r[0] for r in results)
    durations = [d for r in results for d in r[1]] or [0.0]
    print(
        f"db={args.db} trials={args.trials} seconds={args.seconds:.0f} procs={args.procs} "
        f"rate={args.rate or 'max'} load={os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    print(
        f"reports made {made}, stored {stored} ({stored / elapsed:.0f}/s over {elapsed:.1f} s "
        f"from the first report to the last answer); requests {len(durations)} "
        f"({made / max(len(durations), 1):.1f} reports each), "
        f"p50 {statistics.median(durations) * 1000:.1f} ms, "
        f"p99 {percentile(durations, 0.99) * 1000:.1f} ms, "
        f"max {max(durations) * 1000:.1f} ms"
    )
    return 0 if stored == made else 1


if __name__ == "__main__":
    sys.exit(main())
