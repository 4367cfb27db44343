"""What acting on spot notices buys: ``python -m bench.spot_notice [--rounds 3] [--parts …]``.

Three parts, both printed as Markdown tables (the ones in ``docs/benchmarks.md``):

1. **Live, the digits trial.** A real master (SQLite), one spot agent watching its own fake
   AWS metadata service (``tests/fake_metadata.py``, faithful to IMDSv2) and a local-provider
   pool for replacements. Once the trial trains, the fake starts answering an instance-action
   two minutes ahead; the times below are the master's own records (events, checkpoint and
   metric report times), measured from the moment the fake began to answer (same clock):

       notice seen by the master -> replacement launch requested -> checkpoint stored
       -> trial exited -> placed on another agent -> first training metric there

   The agent polls every 5 s (AWS's advice), so the first stage is up to 5 s by design.
   Checkpoints go to the master's default shared_fs storage.
2. **Simulated week.** ``bench/data/week.jsonl`` through the simulator's spot scenarios
   (``bench.simulator``) with and without notice handling (``Simulation.notice_checkpoint_s``:
   a checkpoint of that many seconds at notice time when it fits the 120 s notice), reporting
   the slot-hours lost to interruptions.

3. **Live, a big checkpoint** (``--checkpoint-mb``, default 1024 MiB): the same cluster and
   stages for ``bench/spot_trial.py``, a Core API trial whose state is that many MiB of random
   bytes, once with the checkpoint on shared_fs and once on S3 (moto in server mode, started
   here; boto3's multipart upload from the agent, ranged download on restore). Each stage is
   timed the same way; "first metric there" includes reading the whole checkpoint back.
   ``--parts`` picks what runs (``--checkpoint-mb 64`` for a quick try).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import boto3
import yaml

from bench.simulation import Simulation
from bench.simulator import scenarios
from bench.workload import DEFAULT_PROFILE, DEFAULT_TRACE, load_profile, load_trace
from cli.context import pack_context
from provisioner.decider import ScaleDecider
from tests.fake_metadata import FakeMetadata
from tests.integration.cluster import (
    Agent,
    Api,
    Master,
    kill_provisioned_agents,
    running_cluster,
    wait_for,
)
from tests.integration.test_experiments_e2e import EXAMPLE, example_config, trials
from tests.moto_logs import REGION, moto_server

CONFIG = example_config(
    "const.yaml",
    searcher__max_length={"batches": 400},
    min_validation_period={"batches": 100},
    scheduling_unit=5,
    hyperparameters__global_batch_size=16,
)
STAGES = (
    "notice seen by the master",
    "replacement requested",
    "checkpoint stored",
    "trial exited",
    "placed on another agent",
    "first metric there",
)
CHECKPOINT_SECONDS = (None, 15.0, 60.0, 150.0)  # None: no notice handling; 150 s > 120 s notice
BIG_TRIAL = Path(__file__).resolve().parent / "spot_trial.py"
# What bench/spot_trial.py logs about its own checkpoint: durations, not times since the notice.
TRIAL_TIMINGS = (
    ("checkpoint stored, as the trial timed it", re.compile(r"stored in ([0-9.]+) s")),
    ("checkpoint restored, as the trial timed it", re.compile(r"restored \S+ .* in ([0-9.]+) s")),
)
PARTS = ("simulated", "digits", "shared_fs", "s3")
MOTO_KEYS = {"access_key": "testing", "secret_key": "testing"}


def big_config(checkpoint_mb: int, storage: dict[str, Any] | None) -> dict[str, Any]:
    """``bench/spot_trial.py`` as an experiment: 20 ms batches, a metric every 10, and a length
    it never reaches (the round kills it once it runs again elsewhere)."""
    config: dict[str, Any] = {
        "name": f"spot_notice_{checkpoint_mb}mb",
        "entrypoint": "python3 train.py",
        "hyperparameters": {"checkpoint_mb": checkpoint_mb, "batch_seconds": 0.02},
        "searcher": {
            "name": "single",
            "metric": "loss",
            "smaller_is_better": True,
            "max_length": {"batches": 1_000_000},
        },
        "scheduling_unit": 10,
    }
    if storage is not None:
        config["checkpoint_storage"] = storage
    return config


@contextlib.contextmanager
def big_context() -> Generator[Path, None, None]:
    """A context directory holding ``bench/spot_trial.py`` alone, as ``train.py``."""
    with tempfile.TemporaryDirectory(prefix="spot-trial-") as tmp:
        shutil.copyfile(BIG_TRIAL, Path(tmp) / "train.py")
        yield Path(tmp)


def create(api: Api, config: dict[str, Any], context: Path) -> int:
    body = {
        "config": yaml.safe_dump(config),
        "modelDefinition": pack_context(context, out=sys.stderr),
        "activate": True,
    }
    response = api.post("/api/v1/experiments", json=body)
    response.raise_for_status()
    experiment_id: int = response.json()["experiment"]["id"]
    return experiment_id


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _pool() -> list[dict[str, Any]]:
    return [
        {
            "pool_name": "default",
            "provider": {
                "type": "local",
                "instance_slots": 1,
                "max_instances": 1,
                "max_idle_agent_period": "10m",
                "provisioning_tick": "10s",
            },
        }
    ]


def _events(api: Api) -> list[dict[str, Any]]:
    found = api.get("/api/v1/resource-pools/default/events", params={"limit": 1000}).json()
    return list(reversed(found["events"]))


def _trial_timings(api: Api, trial_id: int) -> list[float | None]:
    """The durations of :data:`TRIAL_TIMINGS` in the trial's logs (None where not logged)."""
    response = api.get(f"/api/v1/trials/{trial_id}/logs")
    response.raise_for_status()
    text = response.text
    found = [pattern.search(text) for _, pattern in TRIAL_TIMINGS]
    return [float(match.group(1)) if match else None for match in found]


def one_round(
    workdir: Path, config: dict[str, Any], context: Path
) -> tuple[list[float | None], int]:
    """Seconds from the notice to each of :data:`STAGES`, then the durations of
    :data:`TRIAL_TIMINGS` (None for a trial that does not log them), and the bytes of the
    checkpoint taken at the notice (its files, as the trial reported them)."""
    fake = FakeMetadata("aws")
    env = {"DET_AGENT_METADATA_SERVICE": "off"}
    # A generator: close() stops its master (running_cluster is typed as a plain iterator).
    cluster = cast(
        Generator[tuple[Master, list[Agent]], None, None],
        running_cluster(
            workdir, f"sqlite:///{workdir / 'db'}", agents=0, env=env, resource_pools=_pool()
        ),
    )
    agent = None
    try:
        master, _ = next(cluster)
        agent = Agent(workdir, master, "a-spot")
        assert agent.env is not None
        agent.env.update(DET_AGENT_METADATA_URL=fake.url, DET_AGENT_METADATA_SERVICE="aws")
        agent.start()
        api = Api(master)
        wait_for("the spot agent", lambda: len(api.agents()) == 1, 60, [agent.log_path])
        experiment_id = create(api, config, context)
        wait_for(
            "the trial to train",
            lambda: (t := trials(api, experiment_id)) and t[0]["totalBatchesProcessed"] > 0,
            180,
        )
        (trial,) = trials(api, experiment_id)
        began = datetime.now(UTC)
        deadline = began + timedelta(minutes=2)
        fake.interrupt("terminate", deadline.strftime("%Y-%m-%dT%H:%M:%SZ"))

        def resumed_metric() -> datetime | None:
            events = {e["kind"]: e for e in _events(api)}
            if "resumed" not in events:
                return None
            metrics = api.get(
                f"/api/v1/trials/{trial['id']}/metrics", params={"group": "training"}
            ).json()["metrics"]
            after = [_time(m["reportTime"]) for m in metrics]
            after = [t for t in after if t > _time(events["resumed"]["time"])]
            return min(after) if after else None

        first_metric = wait_for("a metric after the resume", resumed_metric, 300)
        events = {e["kind"]: e for e in _events(api)}
        checkpoints = api.get(f"/api/v1/trials/{trial['id']}/checkpoints").json()["checkpoints"]
        latest = max(checkpoints, key=lambda c: _time(c["reportTime"]))
        stored = _time(latest["reportTime"])
        size = sum(int(n) for n in latest["resources"].values())
        times = [
            _time(events["interruption_notice"]["time"]),
            _time(events["requested"]["time"]),
            stored,
            _time(events["checkpointed"]["time"]),
            _time(events["resumed"]["time"]),
            first_metric,
        ]
        api.post(f"/api/v1/experiments/{experiment_id}/kill")
        stages: list[float | None] = [(t - began).total_seconds() for t in times]
        return stages + _trial_timings(api, trial["id"]), size
    finally:
        if agent is not None:
            agent.stop()
        cluster.close()
        fake.close()
        kill_provisioned_agents(workdir)


def live(rounds: int, what: str, config: dict[str, Any], context: Path) -> None:
    rows = []
    sizes = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="spot-notice-") as tmp:
            os.chmod(tmp, 0o711)  # task uids (isolation uid, as root) pass through it
            times, size = one_round(Path(tmp), config, context)
            rows.append(times)
            sizes.append(size)
    print(
        f"\nNotice -> running again elsewhere, {what}, {rounds} round(s), seconds from "
        "the fake metadata service's first answer (median, max); checkpoint at the notice: "
        f"{max(sizes) / 2**20:.1f} MiB:\n"
    )
    print("| stage | median | max |\n|---|--:|--:|")
    for index, stage in enumerate(STAGES + tuple(name for name, _ in TRIAL_TIMINGS)):
        column = [value for r in rows if (value := r[index]) is not None]
        if not column:
            continue
        print(f"| {stage} | {statistics.median(column):.1f} s | {max(column):.1f} s |")


def simulated(seed: int) -> None:
    profile = load_profile(DEFAULT_PROFILE)
    jobs = load_trace(DEFAULT_TRACE)
    print(f"\nSlot-hours lost to spot interruptions, {DEFAULT_TRACE.name}, seed {seed}:\n")
    print(
        "| scenario | notice handling | interruptions | slot-h lost | cost |\n|---|---|--:|--:|--:|"
    )
    for scenario in scenarios(profile, "g5.xlarge", 200)[1:]:
        for checkpoint_s in CHECKPOINT_SECONDS:
            result = Simulation(
                jobs,
                profile,
                scenario.config,
                scenario.offers,
                ScaleDecider(),
                seed,
                spot_outages=scenario.spot_outages,
                notice_checkpoint_s=checkpoint_s,
            ).run()
            handling = "none" if checkpoint_s is None else f"{checkpoint_s:.0f} s checkpoint"
            print(
                f"| {scenario.name} | {handling} | {result.interruptions} | "
                f"{result.slot_hours_lost:.1f} | ${result.cost:,.0f} |"
            )


def big_on_s3(rounds: int, checkpoint_mb: int) -> None:
    """The big trial with its checkpoints in a bucket of a moto server started here."""
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)  # the master and agents inherit it
    bucket = f"spot-notice-{uuid.uuid4().hex[:12]}"
    with moto_server() as endpoint, big_context() as context:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id=MOTO_KEYS["access_key"],
            aws_secret_access_key=MOTO_KEYS["secret_key"],
        ).create_bucket(Bucket=bucket)
        storage = {"type": "s3", "bucket": bucket, "endpoint_url": endpoint, **MOTO_KEYS}
        live(
            rounds,
            f"{checkpoint_mb} MiB checkpoint on S3 (moto)",
            big_config(checkpoint_mb, storage),
            context,
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spot_notice", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated, of {', '.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--checkpoint-mb", type=int, default=1024, help="the big trial's checkpoint, in MiB"
    )
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; allowed: {', '.join(PARTS)}")
    if args.checkpoint_mb < 1:
        parser.error("--checkpoint-mb: must be at least 1 (MiB)")
    started = time.monotonic()
    if "simulated" in parts:
        simulated(args.seed)
    if "digits" in parts:
        live(args.rounds, "digits trial", CONFIG, EXAMPLE)
    if "shared_fs" in parts:
        with big_context() as context:
            what = f"{args.checkpoint_mb} MiB checkpoint on shared_fs"
            live(args.rounds, what, big_config(args.checkpoint_mb, None), context)
    if "s3" in parts:
        big_on_s3(args.rounds, args.checkpoint_mb)
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
