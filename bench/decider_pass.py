"""How long one ``ScaleDecider.decide`` takes on a busy pool with ``auto`` and a full history:
``python -m bench.decider_pass [--idle 100] [--arrivals 4096]``.

The pool has ``--idle`` idle agents (each a different break-even rank), as many busy ones, 50
pending jobs, three zones of offers and ``--arrivals`` arrivals spread over the last 2 hours
(the history's cap), with the warm pool on. Target (issue 16): a pass ≤ 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from provisioner.config import ProviderConfig
from provisioner.decider import ScaleDecider
from provisioner.history import MAX_ARRIVALS
from provisioner.types import (
    AgentInfo,
    Demand,
    Instance,
    InstanceState,
    Market,
    Offer,
    PoolHistory,
    PoolSnapshot,
)

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def snapshot(idle: int, arrivals: int) -> PoolSnapshot:
    instances, agents = [], []
    for n in range(2 * idle):
        launched = NOW - timedelta(hours=1)
        instances.append(
            Instance(
                f"i{n}", "g5.xlarge", "a", Market.ON_DEMAND, 1.0, 1, InstanceState.RUNNING, launched
            )
        )
        idle_since = NOW - timedelta(seconds=n) if n < idle else None
        agents.append(AgentInfo(f"a{n}", f"i{n}", 1, idle_since))
    step = 7200 / max(1, arrivals)
    history = PoolHistory(
        tuple((NOW - timedelta(seconds=7200 - step * k), 1 + k % 4) for k in range(arrivals)),
        tuple(90.0 + k for k in range(20)),
        NOW - timedelta(days=8),
        40,
    )
    offers = tuple(Offer("g5.xlarge", zone, Market.ON_DEMAND, 1.0, 1) for zone in ("a", "b", "c"))
    pending = tuple(Demand(f"j{n}", 1 + n % 8, n % 3 == 0) for n in range(50))
    return PoolSnapshot("gpu", pending, tuple(instances), tuple(agents), offers, (), None, history)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decider_pass", description=__doc__)
    parser.add_argument("--idle", type=int, default=100)
    parser.add_argument("--arrivals", type=int, default=MAX_ARRIVALS)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)
    config = ProviderConfig(type="local", max_instances=1000, max_warm_cost_per_hour=5)
    pool = snapshot(args.idle, args.arrivals)
    decider = ScaleDecider()
    times = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        decider.decide(pool, config, NOW)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    print(
        f"{args.idle} idle + {args.idle} busy agents, {args.arrivals} arrivals: "
        f"median {statistics.median(times):.2f} ms, max {times[-1]:.2f} ms "
        f"over {args.rounds} passes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
