"""The simulator's inputs and the arithmetic that could silently be wrong.

Inputs are a job trace (``data/week.jsonl``: one JSON object per line with ``id``, ``submit_s``,
``kind``, ``slots``, ``duration_s``, ``priority`` and optionally ``experiment``) and a cloud
profile (``data/cloud_profile.json``: instance types with on-demand and spot $/hour, a
lognormal boot time given by its median and p95, spot interruption hazard and notice, capacity
error probabilities per launch call, and billing granularity and minimum). Both are copies of
``../shared/traces/`` so that the repository reproduces its own numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"
DEFAULT_TRACE = DATA / "week.jsonl"
DEFAULT_PROFILE = DATA / "cloud_profile.json"

Z_95 = 1.6448536269514722  # the standard normal's 95th percentile


@dataclass(frozen=True)
class Job:
    id: str
    submit_s: float
    kind: str  # trial | command | notebook
    slots: int
    duration_s: float
    priority: int  # lower runs first (Determined's scale)
    experiment: str | None = None

    @property
    def single_agent(self) -> bool:
        """Trials may span agents (distributed training); commands and notebooks may not."""
        return self.kind != "trial"


@dataclass(frozen=True)
class InstanceType:
    name: str
    slots: int
    on_demand_per_hour: float
    spot_per_hour: float


@dataclass(frozen=True)
class CloudProfile:
    instance_types: dict[str, InstanceType]
    boot_median_s: float
    boot_p95_s: float
    spot_hazard_per_hour: float
    spot_notice_s: float
    spot_capacity_error: float
    on_demand_capacity_error: float
    billing_granularity_s: float
    billing_minimum_s: float

    @property
    def boot_lognormal(self) -> tuple[float, float]:
        """(mu, sigma) of the lognormal with this median and p95."""
        mu = math.log(self.boot_median_s)
        return mu, (math.log(self.boot_p95_s) - mu) / Z_95


def load_trace(path: Path = DEFAULT_TRACE) -> list[Job]:
    """The jobs in submission order; a malformed line raises naming its line number."""
    jobs = []
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                jobs.append(
                    Job(
                        id=str(row["id"]),
                        submit_s=float(row["submit_s"]),
                        kind=str(row["kind"]),
                        slots=int(row["slots"]),
                        duration_s=float(row["duration_s"]),
                        priority=int(row["priority"]),
                        experiment=row.get("experiment"),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: bad job ({exc!r})") from exc
    return sorted(jobs, key=lambda j: (j.submit_s, j.id))


def load_profile(path: Path = DEFAULT_PROFILE) -> CloudProfile:
    raw = json.loads(path.read_text())
    types = {
        t["name"]: InstanceType(
            t["name"], int(t["slots"]), t["on_demand_usd_per_hour"], t["spot_usd_per_hour"]
        )
        for t in raw["instance_types"]
    }
    boot, spot, billing = raw["boot_seconds"], raw["spot"], raw["billing"]
    if boot["distribution"] != "lognormal":
        raise ValueError(f"{path}: boot_seconds.distribution must be lognormal")
    return CloudProfile(
        instance_types=types,
        boot_median_s=boot["median"],
        boot_p95_s=boot["p95"],
        spot_hazard_per_hour=spot["interruption_hazard_per_instance_hour"],
        spot_notice_s=spot["notice_seconds"],
        spot_capacity_error=spot["capacity_error_probability_per_launch"],
        on_demand_capacity_error=raw["on_demand"]["capacity_error_probability_per_launch"],
        billing_granularity_s=billing["granularity_seconds"],
        billing_minimum_s=billing["minimum_seconds"],
    )


def billed_seconds(run_s: float, granularity_s: float, minimum_s: float) -> float:
    """Seconds charged for an instance that ran ``run_s``: rounded up to the granularity, and
    never less than the minimum (EC2 Linux: per second, 60 s minimum)."""
    rounded = math.ceil(run_s / granularity_s - 1e-9) * granularity_s
    return max(rounded, minimum_s)


def lower_bound(jobs: Iterable[Job], usd_per_slot_second: float) -> float:
    """No policy can pay less than the work itself at the cheapest slot price."""
    return sum(j.slots * j.duration_s for j in jobs) * usd_per_slot_second


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), interpolated between the closest ranks; 0 when empty."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]
