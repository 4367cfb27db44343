"""The autoscaling simulator: ``python -m bench.simulator [--seed 1,2,3] [--max-idle 20m,30s]``.

Runs each scenario over the same trace, cloud and seeds with Determined's policy
(``bench/baseline.py``, at Determined's default 20m idle period) and with the real
``ScaleDecider`` at each ``--max-idle``, and prints a Markdown table (the one in
``docs/benchmarks.md``, means over the seeds) and how each decider row does against the
issue's targets: on-demand cost ≤ 1.10 × the lower bound with p95 wait ≤ boot p95 + 30 s, and
≥ 20 % cheaper than the baseline at an equal or better p95 wait. ``--sweep-idle`` prints how
cost and wait move with ``max_idle_agent_period`` instead.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path

from bench.baseline import DeterminedPolicy
from bench.simulation import Policy, Result, Simulation
from bench.workload import DEFAULT_PROFILE, DEFAULT_TRACE, CloudProfile, load_profile, load_trace
from harness.units import format_duration, parse_duration
from provisioner.config import AWSProviderConfig, ProviderConfig
from provisioner.decider import ScaleDecider
from provisioner.types import Market, Offer

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")
DETERMINED_IDLE = timedelta(minutes=20)  # Determined's default max_idle_agent_period
SPOT_OUTAGE = ((86400 + 9 * 3600.0, 86400 + 15 * 3600.0),)  # Tuesday 09:00–15:00
RATIO_TARGET = 1.10
WAIT_SLACK_S = 30.0
SAVING_TARGET = 0.20


@dataclass(frozen=True)
class Scenario:
    name: str
    config: ProviderConfig
    offers: list[Offer]
    spot_outages: tuple[tuple[float, float], ...] = ()

    def with_idle(self, period: timedelta | None) -> ProviderConfig:
        return self.config.model_copy(update={"max_idle_agent_period": period})


def offers_for(profile: CloudProfile, instance_type: str, markets: Sequence[Market]) -> list[Offer]:
    """The type in each of three zones, on each market, at the profile's prices."""
    shape = profile.instance_types[instance_type]
    price = {Market.SPOT: shape.spot_per_hour, Market.ON_DEMAND: shape.on_demand_per_hour}
    return [
        Offer(instance_type, zone, market, price[market], shape.slots)
        for market in markets
        for zone in ZONES
    ]


def scenarios(profile: CloudProfile, instance_type: str, max_instances: int) -> list[Scenario]:
    common = {
        "type": "aws",
        "image_id": "ami-simulated",
        "instance_type": instance_type,
        "instance_slots": profile.instance_types[instance_type].slots,
        "max_instances": max_instances,
    }
    spot = AWSProviderConfig.model_validate(
        {**common, "spot": True, "spot_fallback": {"policy": "spot_then_on_demand"}}
    )
    both = offers_for(profile, instance_type, [Market.SPOT, Market.ON_DEMAND])
    return [
        Scenario(
            f"on-demand {instance_type}",
            AWSProviderConfig.model_validate(common),
            offers_for(profile, instance_type, [Market.ON_DEMAND]),
        ),
        Scenario(f"spot {instance_type}, fallback", spot, both),
        Scenario(f"spot {instance_type}, fallback, 6 h spot outage", spot, both, SPOT_OUTAGE),
    ]


def simulate(
    scenario: Scenario,
    policy: Policy,
    config: ProviderConfig,
    trace: Path,
    profile: CloudProfile,
    seeds: Sequence[int],
) -> Result:
    """The mean result over the seeds."""
    jobs = load_trace(trace)
    results = [
        Simulation(
            jobs, profile, config, scenario.offers, policy, seed, spot_outages=scenario.spot_outages
        ).run()
        for seed in seeds
    ]
    means = {f.name: statistics.fmean(getattr(r, f.name) for r in results) for f in fields(Result)}
    return Result(**means)  # type: ignore[arg-type]


HEADER = (
    "| scenario | policy | cost | lower bound | ratio | idle | wait p50 | wait p95 | launches "
    "| capacity errors | interruptions | slot-h lost | on-demand $ |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def row(scenario: str, policy: str, r: Result) -> str:
    cells = [
        scenario,
        policy,
        f"${r.cost:,.0f}",
        f"${r.lower_bound:,.0f}",
        f"{r.cost_ratio:.3f}",
        f"{r.idle_fraction:.1%}",
        f"{r.wait_p50_s:.0f} s",
        f"{r.wait_p95_s:.0f} s",
        f"{r.launches:.0f}",
        f"{r.launch_errors:.0f}",
        f"{r.interruptions:.0f}",
        f"{r.slot_hours_lost:.1f}",
        f"{r.on_demand_cost / r.cost:.0%}" if r.cost else "–",
    ]
    return "| " + " | ".join(cells) + " |"


def verdicts(name: str, label: str, ours: Result, base: Result, boot_p95_s: float) -> list[str]:
    lines = []
    wait_target = boot_p95_s + WAIT_SLACK_S
    if name.startswith("on-demand"):
        ok = ours.cost_ratio <= RATIO_TARGET and ours.wait_p95_s <= wait_target
        lines.append(
            f"- {name}, {label}: cost {ours.cost_ratio:.3f} × the lower bound (target "
            f"≤ {RATIO_TARGET:.2f}), p95 wait {ours.wait_p95_s:.0f} s (target ≤ "
            f"{wait_target:.0f} s): " + ("met" if ok else "MISSED")
        )
    saving = 1 - ours.cost / base.cost if base.cost else 0.0
    ok = saving >= SAVING_TARGET and ours.wait_p95_s <= base.wait_p95_s
    lines.append(
        f"- {name}, {label}: {saving:.1%} cheaper than the baseline (target "
        f"≥ {SAVING_TARGET:.0%}), p95 wait {ours.wait_p95_s:.0f} s vs {base.wait_p95_s:.0f} s "
        "(target: equal or better): " + ("met" if ok else "MISSED")
    )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator", description=__doc__)
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--seed", default="1", help="a seed, or seeds to average: 1,2,3")
    parser.add_argument("--instance-type", default="g5.xlarge")
    parser.add_argument("--max-instances", type=int, default=200)
    parser.add_argument(
        "--max-idle",
        default="20m,30s",
        help="the decider's max_idle_agent_period, one row per value (default: 20m,30s)",
    )
    parser.add_argument(
        "--gang-spare", type=float, default=0.0, help="ScaleDecider(gang_spare=…), default 0"
    )
    parser.add_argument(
        "--sweep-idle", help="print cost and wait for each of these periods (e.g. 0s,30s,1m,5m)"
    )
    return parser.parse_args(argv)


def sweep(args: argparse.Namespace, profile: CloudProfile, seeds: list[int]) -> None:
    print("| scenario | max_idle_agent_period | policy | cost | ratio | wait p50 | wait p95 |")
    print("|---|--:|---|--:|--:|--:|--:|")
    for scenario in scenarios(profile, args.instance_type, args.max_instances)[:2]:
        for value in args.sweep_idle.split(","):
            period = parse_duration(value)
            for label, policy in (
                ("ScaleDecider", ScaleDecider(args.gang_spare)),
                ("Determined", DeterminedPolicy()),
            ):
                r = simulate(
                    scenario, policy, scenario.with_idle(period), args.trace, profile, seeds
                )
                print(
                    f"| {scenario.name} | {format_duration(period)} | {label} | ${r.cost:,.0f} "
                    f"| {r.cost_ratio:.3f} | {r.wait_p50_s:.0f} s | {r.wait_p95_s:.0f} s |",
                    flush=True,
                )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    profile = load_profile(args.profile)
    seeds = [int(s) for s in args.seed.split(",")]
    started = time.monotonic()
    if args.sweep_idle:
        sweep(args, profile, seeds)
        print(f"\nseeds {args.seed}, {time.monotonic() - started:.0f} s")
        return 0

    print(HEADER)
    notes: list[str] = []
    spare = f", gang_spare {args.gang_spare:g}" if args.gang_spare else ""
    for scenario in scenarios(profile, args.instance_type, args.max_instances):
        base = simulate(
            scenario,
            DeterminedPolicy(),
            scenario.with_idle(DETERMINED_IDLE),
            args.trace,
            profile,
            seeds,
        )
        print(row(scenario.name, f"Determined (idle {format_duration(DETERMINED_IDLE)})", base))
        for value in args.max_idle.split(","):
            period = parse_duration(value)
            label = f"ScaleDecider (idle {format_duration(period)}{spare})"
            config = scenario.with_idle(period)
            ours = simulate(
                scenario, ScaleDecider(args.gang_spare), config, args.trace, profile, seeds
            )
            print(row(scenario.name, label, ours), flush=True)
            notes += verdicts(scenario.name, label, ours, base, profile.boot_p95_s)
            if ours.unfinished or base.unfinished:
                notes.append(f"- {scenario.name}, {label}: jobs left unfinished")
    print()
    print("\n".join(notes))
    print(
        f"\n{base.rejected:.0f} single-agent jobs can never fit on {args.instance_type}: "
        "rejected at submission, left out of every figure."
    )
    print(f"seeds {args.seed}; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
