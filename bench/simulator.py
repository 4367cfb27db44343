"""The autoscaling simulator:
``python -m bench.simulator --trace FILE --profile FILE --seed S[,S…] [--json] [--sweep-idle]``.

Runs each scenario (on-demand; spot with fallback; spot with a 6 h outage) over the same trace,
cloud and seeds with Determined's policy (``bench/baseline.py``) and with the real
``ScaleDecider``, and prints one row per scenario × policy × ``max_idle_agent_period`` (means
over the seeds): a Markdown table, or with ``--json`` one JSON object per line with the keys
``scenario``, ``policy``, ``max_idle``, ``cost``, ``lower_bound``, ``ratio``, ``wait_p50_s``,
``wait_p95_s``, ``launches``, ``slot_h_lost``, ``rejected`` (and ``unfinished``, ``seeds``).

Without ``--sweep-idle``: Determined at its default 20m, the decider at each ``--max-idle``
(default ``auto,30s``). With ``--sweep-idle``: Determined at 0s, 30s, 1m, 2m, 5m, 10m and 20m,
the decider at ``auto`` and the same periods, then the verdicts against issue 16's targets
(``verdicts``), and with ``--plot FILE`` the cost/p95-wait frontier as a PNG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.baseline import DeterminedPolicy
from bench.simulation import Policy, Result, Simulation
from bench.workload import DEFAULT_PROFILE, DEFAULT_TRACE, CloudProfile, load_profile, load_trace
from provisioner.config import (
    AWSProviderConfig,
    ProviderConfig,
    format_idle_period,
    parse_idle_period,
)
from provisioner.decider import ScaleDecider
from provisioner.types import Market, Offer

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")

SPOT_OUTAGE = ((86400 + 9 * 3600.0, 86400 + 15 * 3600.0),)  # Tuesday 09:00–15:00
SWEEP = ("0s", "30s", "1m", "2m", "5m", "10m", "20m")  # Determined's settings in --sweep-idle
WASTE_TARGET = 0.60  # auto's waste at most this share of Determined@20m's
COMPARED = ("2m", "5m", "10m", "20m")  # auto must be cheaper than each at equal or better p95


@dataclass(frozen=True)
class Scenario:
    name: str
    config: ProviderConfig
    offers: list[Offer]
    spot_outages: tuple[tuple[float, float], ...] = ()

    def with_idle(self, period: timedelta | str | None) -> ProviderConfig:
        return self.config.model_copy(update={"max_idle_agent_period": period})


def offers_for(profile: CloudProfile, instance_type: str, markets: Sequence[Market]) -> list[Offer]:
    """The types (comma-separated for a mixed pool) in each of three zones, on each market, at
    the profile's prices."""
    offers = []
    for name in instance_type.split(","):
        shape = profile.instance_types[name]
        price = {Market.SPOT: shape.spot_per_hour, Market.ON_DEMAND: shape.on_demand_per_hour}
        offers += [
            Offer(name, zone, market, price[market], shape.slots)
            for market in markets
            for zone in ZONES
        ]
    return offers


def scenarios(profile: CloudProfile, instance_type: str, max_instances: int) -> list[Scenario]:
    """On-demand, spot with fallback, and spot with a 6 h outage. With several types (a mixed
    pool) Determined's policy, which has one type per pool, gets the first."""
    types = instance_type.split(",")
    common: dict[str, object] = {
        "type": "aws",
        "image_id": "ami-simulated",
        "instance_type": types[0],
        "max_instances": max_instances,
    }
    if len(types) > 1:
        common["instance_types"] = types
    else:
        common["instance_slots"] = profile.instance_types[instance_type].slots
    spot = AWSProviderConfig.model_validate(
        {**common, "spot": True, "spot_fallback": {"policy": "spot_then_on_demand"}}
    )
    both = offers_for(profile, instance_type, [Market.SPOT, Market.ON_DEMAND])
    shown = "+".join(types)
    return [
        Scenario(
            f"on-demand {shown}",
            AWSProviderConfig.model_validate(common),
            offers_for(profile, instance_type, [Market.ON_DEMAND]),
        ),
        Scenario(f"spot {shown}, fallback", spot, both),
        Scenario(f"spot {shown}, fallback, 6 h spot outage", spot, both, SPOT_OUTAGE),
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
    offers = scenario.offers
    if isinstance(policy, DeterminedPolicy):  # one instance type per pool
        offers = [o for o in offers if o.instance_type == offers[0].instance_type]
    results = [
        Simulation(
            jobs, profile, config, offers, policy, seed, spot_outages=scenario.spot_outages
        ).run()
        for seed in seeds
    ]
    means = {f.name: statistics.fmean(getattr(r, f.name) for r in results) for f in fields(Result)}
    return Result(**means)  # type: ignore[arg-type]


HEADER = (
    "| scenario | policy | max_idle | cost | lower bound | ratio | idle | wait p50 | wait p95 "
    "| launches | capacity errors | interruptions | slot-h lost | on-demand $ |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


@dataclass(frozen=True)
class Row:
    scenario: str
    policy: str  # "Determined" or "ScaleDecider"
    max_idle: str  # "auto", "off" or a duration as written
    result: Result

    def as_json(self, seeds: str) -> dict[str, object]:
        r = self.result
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "max_idle": self.max_idle,
            "cost": round(r.cost, 2),
            "lower_bound": round(r.lower_bound, 2),
            "ratio": round(r.cost_ratio, 4),
            "wait_p50_s": round(r.wait_p50_s, 1),
            "wait_p95_s": round(r.wait_p95_s, 1),
            "launches": round(r.launches, 1),
            "slot_h_lost": round(r.slot_hours_lost, 2),
            "rejected": round(r.rejected),
            "unfinished": round(r.unfinished, 2),
            "seeds": seeds,
        }

    def markdown(self) -> str:
        r = self.result
        cells = [
            self.scenario,
            self.policy,
            self.max_idle,
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


def verdicts(rows: list[Row]) -> list[str]:
    """Issue 16's targets, per scenario: ``auto``'s waste (cost above the lower bound) at most
    60 % of Determined@20m's at a p95 wait no worse, and ``auto`` cheaper than Determined at
    each of 2m, 5m, 10m and 20m at an equal or better p95 wait."""
    lines = []
    for scenario in dict.fromkeys(r.scenario for r in rows):
        ours = next(
            (
                r.result
                for r in rows
                if r.scenario == scenario and r.policy == "ScaleDecider" and r.max_idle == "auto"
            ),
            None,
        )
        base = {
            r.max_idle: r.result
            for r in rows
            if r.scenario == scenario and r.policy == "Determined"
        }
        if ours is None or "20m" not in base:
            continue
        ref = base["20m"]
        waste, ref_waste = ours.cost - ours.lower_bound, ref.cost - ref.lower_bound
        share = waste / ref_waste if ref_waste else float("inf")
        ok = share <= WASTE_TARGET and ours.wait_p95_s <= ref.wait_p95_s
        lines.append(
            f"- {scenario}: auto's waste ${waste:,.0f} is {share:.0%} of Determined@20m's "
            f"${ref_waste:,.0f} (target ≤ {WASTE_TARGET:.0%}), p95 wait {ours.wait_p95_s:.0f} s "
            f"vs {ref.wait_p95_s:.0f} s: " + ("met" if ok else "MISSED")
        )
        for setting in COMPARED:
            if setting not in base:
                continue
            other = base[setting]
            ok = ours.cost < other.cost and ours.wait_p95_s <= other.wait_p95_s
            lines.append(
                f"  - vs Determined@{setting}: ${ours.cost:,.0f} vs ${other.cost:,.0f}, p95 "
                f"{ours.wait_p95_s:.0f} s vs {other.wait_p95_s:.0f} s: "
                + ("met" if ok else "MISSED")
            )
        if ours.unfinished or ours.rejected:
            lines.append(
                f"  - {ours.unfinished:.0f} unfinished, {ours.rejected:.0f} rejected with auto"
            )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--seed", default="1", help="a seed, or seeds to average: 1,2,3")
    parser.add_argument(
        "--instance-type",
        default=None,
        help="the pool's instance type; several, comma-separated, make a mixed pool "
        "(default: the profile's first)",
    )
    parser.add_argument("--max-instances", type=int, default=200)
    parser.add_argument(
        "--max-idle",
        default="auto,30s",
        help="the decider's max_idle_agent_period, one row per value (default: auto,30s)",
    )
    parser.add_argument(
        "--gang-spare", type=float, default=0.0, help="ScaleDecider(gang_spare=…), default 0"
    )
    parser.add_argument(
        "--sweep-idle",
        nargs="?",
        const=",".join(SWEEP),
        help=f"Determined at these periods (default {','.join(SWEEP)}), the decider at auto "
        "and the same",
    )
    parser.add_argument(
        "--warm-cost",
        type=float,
        default=0.0,
        help="the decider's max_warm_cost_per_hour ($/h; default 0, the warm pool off)",
    )
    parser.add_argument("--boot-hedge", type=float, help="the decider's boot_hedge (default 1)")
    parser.add_argument("--scenarios", default="all", help="on-demand,spot,outage or all")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--plot", type=Path, help="with --sweep-idle: write the frontier PNG")
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="ROWS.jsonl",
        help="draw --plot from rows saved from --json instead of simulating",
    )
    return parser.parse_args(argv)


def selected(args: argparse.Namespace, profile: CloudProfile) -> list[Scenario]:
    instance_type = args.instance_type or next(iter(profile.instance_types))
    unknown = [t for t in instance_type.split(",") if t not in profile.instance_types]
    if unknown:
        raise SystemExit(
            f"--instance-type {','.join(unknown)}: not in {args.profile} "
            f"(has {', '.join(profile.instance_types)})"
        )
    found = scenarios(profile, instance_type, args.max_instances)
    if args.scenarios == "all":
        return found
    keys = {"on-demand": 0, "spot": 1, "outage": 2}
    wanted = args.scenarios.split(",")
    bad = [w for w in wanted if w not in keys]
    if bad:
        raise SystemExit(f"--scenarios {','.join(bad)}: expected on-demand, spot, outage or all")
    return [found[keys[w]] for w in wanted]


def runs(args: argparse.Namespace) -> list[tuple[Scenario, str, Policy, str]]:
    profile = load_profile(args.profile)
    plan: list[tuple[Scenario, str, Policy, str]] = []
    for scenario in selected(args, profile):
        ours = (
            ["auto", *args.sweep_idle.split(",")] if args.sweep_idle else args.max_idle.split(",")
        )
        theirs = args.sweep_idle.split(",") if args.sweep_idle else ["20m"]
        for value in theirs:
            plan.append((scenario, "Determined", DeterminedPolicy(), value))
        for value in dict.fromkeys(ours):
            plan.append((scenario, "ScaleDecider", ScaleDecider(args.gang_spare), value))
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        if not args.plot:
            raise SystemExit("--replot: name the PNG to write with --plot")
        saved = [json.loads(line) for line in args.replot.read_text().splitlines() if line]
        plot_frontier(saved, args.plot, f"{args.replot.stem}, seeds {saved[0]['seeds']}")
        return 0
    profile = load_profile(args.profile)
    seeds = [int(s) for s in args.seed.split(",")]
    started = time.monotonic()
    rows: list[Row] = []
    if not args.json:
        print(HEADER)
    for scenario, label, policy, value in runs(args):
        period = parse_idle_period(value)
        config = scenario.with_idle(period)
        if label == "ScaleDecider":
            fleet: dict[str, object] = {"max_warm_cost_per_hour": args.warm_cost}
            if args.boot_hedge is not None:
                fleet["boot_hedge"] = args.boot_hedge
            config = config.model_copy(update=fleet)
        result = simulate(scenario, policy, config, args.trace, profile, seeds)
        row = Row(scenario.name, label, format_idle_period(period), result)
        rows.append(row)
        print(json.dumps(row.as_json(args.seed)) if args.json else row.markdown(), flush=True)
    if args.plot:
        drawn = [row.as_json(args.seed) for row in rows]
        plot_frontier(drawn, args.plot, f"{args.trace.name}, seeds {args.seed}")
    if not args.json:
        print()
        print("\n".join(verdicts(rows)))
        rejected = {r.policy: r.result.rejected for r in rows}
        print(
            "\nsingle-agent jobs that can never fit (rejected at submission, left out of every "
            "figure): " + ", ".join(f"{k} {v:.0f}" for k, v in rejected.items())
        )
        print(f"{args.trace.name}, seeds {args.seed}; {time.monotonic() - started:.0f} s")
    return 0


def plot_frontier(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Cost against p95 wait, one panel per scenario, a line per policy (labelled settings),
    from rows as ``--json`` prints them. Points far off the frontier (Determined at 0s, which
    thrashes) are left off the axes and named under the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(str(r["scenario"]) for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        mine = [r for r in rows if r["scenario"] == name]
        waits = sorted(float(r["wait_p95_s"]) for r in mine)
        limit = 3 * waits[len(waits) // 2]
        shown = [r for r in mine if float(r["wait_p95_s"]) <= limit]
        off = [f"{r['policy']} {r['max_idle']}" for r in mine if r not in shown]
        for label, marker in (("Determined", "s"), ("ScaleDecider", "o")):
            points = [r for r in shown if r["policy"] == label]
            fixed = [r for r in points if r["max_idle"] != "auto"]
            ax.plot(
                [r["wait_p95_s"] for r in fixed],
                [r["cost"] for r in fixed],
                marker=marker,
                label=f"{label} (fixed periods)",
            )
            for r in points:
                ax.annotate(str(r["max_idle"]), (r["wait_p95_s"], r["cost"]), fontsize=7)
            auto = [r for r in points if r["max_idle"] == "auto"]
            if auto:
                ax.plot(
                    [r["wait_p95_s"] for r in auto],
                    [r["cost"] for r in auto],
                    marker="*",
                    markersize=14,
                    linestyle="",
                    color="tab:red",
                    label="ScaleDecider auto",
                )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("p95 wait (s)" + (f"\noff the chart: {', '.join(off)}" if off else ""))
        ax.set_ylabel("cost ($)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
