"""A synthetic week of jobs in ``week.jsonl``'s format, for held-out simulator runs:
``python -m bench.tracegen --seed 7 --peak-hour 11 --load 1.3 --out bench/data/week_holdout.jsonl``.

Its shape follows ``bench/data/week.jsonl`` (measured from it, not fitted to any result):
experiments on weekdays (about 30 a day, 8 on weekend days) submit a burst of trials within
~30 s (1–16 trials, 5 on average; one slot count per experiment: 1 in 79 %, 2, 4 or 8 in the
rest); trials run a lognormal time (median ~5 min, a long tail up to a day); commands (~14 a
day, a quarter of them 2 slots) run minutes; notebooks (~8 a day, priority 30) run hours.
Submissions cluster around ``--peak-hour`` (UTC, standard deviation 3 h) with 15 % spread
over the day. ``--load`` scales the number of experiments, commands and notebooks.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

DAY = 86400.0
SLOTS = ((1, 0.79), (2, 0.07), (4, 0.06), (8, 0.08))


def _when(rng: random.Random, day: int, peak_hour: float) -> float:
    if rng.random() < 0.15:
        hour = rng.uniform(0, 24)
    else:
        hour = min(23.99, max(0.0, rng.gauss(peak_hour, 3.0)))
    return day * DAY + hour * 3600


def generate(seed: int, peak_hour: float = 14.0, load: float = 1.0, days: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    experiments = 0
    for day in range(days):
        weekend = day % 7 >= 5
        for _ in range(round((8 if weekend else 30) * load * rng.uniform(0.8, 1.2))):
            experiments += 1
            start = _when(rng, day, peak_hour)
            slots = rng.choices([s for s, _ in SLOTS], [w for _, w in SLOTS])[0]
            for _ in range(min(16, max(1, round(rng.expovariate(1 / 5))))):
                rows.append(
                    {
                        "submit_s": round(start + rng.uniform(0, 30)),
                        "kind": "trial",
                        "slots": slots,
                        "duration_s": round(min(86400, max(60, rng.lognormvariate(5.7, 1.4)))),
                        "priority": 42,
                        "experiment": f"e{experiments}",
                    }
                )
        for _ in range(round((4 if weekend else 17) * load * rng.uniform(0.8, 1.2))):
            rows.append(
                {
                    "submit_s": round(_when(rng, day, peak_hour)),
                    "kind": "command",
                    "slots": 2 if rng.random() < 0.25 else 1,
                    "duration_s": round(min(9000, max(60, rng.lognormvariate(6.2, 1.0)))),
                    "priority": 42,
                    "experiment": None,
                }
            )
        for _ in range(round((2 if weekend else 10) * load * rng.uniform(0.8, 1.2))):
            rows.append(
                {
                    "submit_s": round(_when(rng, day, peak_hour)),
                    "kind": "notebook",
                    "slots": 1,
                    "duration_s": round(min(36000, max(1200, rng.lognormvariate(8.5, 0.7)))),
                    "priority": 30,
                    "experiment": None,
                }
            )
    rows.sort(key=lambda r: r["submit_s"])
    return [{"id": f"j{n}", **row} for n, row in enumerate(rows, 1)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracegen", description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--peak-hour", type=float, default=14.0, help="UTC hour, default 14")
    parser.add_argument("--load", type=float, default=1.0, help="scale of the job counts")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = generate(args.seed, args.peak_hour, args.load, args.days)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{args.out}: {len(rows)} jobs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
