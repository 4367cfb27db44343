"""The experiment page's learning curves at scale: 100 trials × 10,000 points per metric.

    .venv/bin/python -m bench.console_chart [--trials 100] [--points 10000] [--rounds 5]

A real master (SQLite, no agents) on loopback. An experiment of the digits example with a random
searcher of ``--trials`` trials, all created at once (``max_concurrent_trials: 0``); with no
agent they stay queued and the experiment stays active, so the page keeps polling. Then, per
trial, ``--points`` training reports (``loss``) and as many validation reports
(``validation_loss``, ``accuracy``) are written straight into ``trial_metrics``, the rows the
report route (``POST /api/v1/trials/{id}/metrics``) writes, in one transaction: 3 metrics ×
trials × points values.

In Debian's headless ``chromium`` (Playwright), signed in as ``determined``:

- *cold*: from ``page.goto('#/experiments/<id>')`` to the first learning curve
  (``figure[data-testid^=chart-training-]`` or ``chart-validation-``) reporting drawn points
  (``data-points`` > 0): the master reads and parses every row (its series cache is empty) and
  downsamples, the browser draws;
- *warm*: the same in a new tab, the master's cache filled;
- *new report*: on the open page, one more report of every metric for one trial is written;
  the time from its commit to the chart's ``data-points`` growing (the page polls every second
  with the series' ``after`` cursor). Repeated ``--rounds`` times at random moments.

Before the browser, the endpoints the page polls are timed once each with a bearer token, the
first call (the series cache empty) and a second one: the experiment, its trials (with best and
latest validation metrics), the training and validation series. Then the master is restarted,
so the browser's first load (*cold*) finds the cache empty again.

Prints Markdown tables. A wait longer than its limit is printed as such, not as a number.
Targets (issue 11): a drawn chart ≤ 1 s, a new report on the chart ≤ 2 s; measured, not
asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cli.context import pack_context
from tests.integration.cluster import Api, Master, wait_for

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_pytorch"
# The learning curves (chart-training-<metric>, chart-validation-<metric>), not the
# hyperparameter plots the page also draws.
CHART = 'figure[data-testid^="chart-training-"], figure[data-testid^="chart-validation-"]'
# How SQLAlchemy's SQLite dialect stores a DateTime (UTC, see master.models.UTCDateTime).
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
NEW_POINT_LIMIT = 60.0  # seconds a new report may take to reach the open chart


def create_experiment(api: Api, trials: int, points: int) -> int:
    config: dict[str, Any] = yaml.safe_load((EXAMPLE / "const.yaml").read_text())
    config["name"] = f"bench-{trials}x{points}"
    config["hyperparameters"]["learning_rate"] = {"type": "double", "minval": 0.1, "maxval": 1.0}
    config["searcher"] = {
        "name": "random",
        "metric": "validation_loss",
        "smaller_is_better": True,
        "max_trials": trials,
        "max_concurrent_trials": 0,
        "max_length": {"batches": points},
    }
    body = {"config": yaml.safe_dump(config), "modelDefinition": pack_context(EXAMPLE)}
    response = api.post("/api/v1/experiments", json=body)
    response.raise_for_status()
    experiment_id: int = response.json()["experiment"]["id"]
    return experiment_id


def metric_rows(trial_id: int, first: int, last: int, start: datetime) -> list[tuple[Any, ...]]:
    """Reports ``first..last`` (batches) of one trial: a training and a validation row each."""
    rows: list[tuple[Any, ...]] = []
    for step in range(first, last + 1):
        loss = 2.3 * (0.999**step) + 0.01 * random.random()
        when = (start + timedelta(milliseconds=step)).strftime(SQLITE_TIME)
        rows.append((trial_id, 0, "training", step, json.dumps({"loss": loss}), None, when))
        values = {"validation_loss": loss * 1.1, "accuracy": 1 - loss / 2.5}
        rows.append((trial_id, 0, "validation", step, json.dumps(values), loss * 1.1, when))
    return rows


INSERT = (
    'INSERT INTO trial_metrics (trial_id, trial_run_id, "group", steps_completed, metrics, '
    "searcher_metric, report_time) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def insert(db: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(db, timeout=30) as connection:
        connection.executemany(INSERT, rows)


def time_api(api: Api, experiment_id: int, trial_id: int) -> list[tuple[str, float, int]]:
    """(what, seconds, bytes) for each endpoint the experiment page polls, twice."""
    series = f"/api/v1/experiments/{experiment_id}/metrics/series"
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("training series (cold)", series, {"group": "training", "name": "loss"}),
        ("training series (warm)", series, {"group": "training", "name": "loss"}),
        ("validation series", series, {"group": "validation", "name": "validation_loss"}),
        ("experiment", f"/api/v1/experiments/{experiment_id}", {}),
        ("experiment (again)", f"/api/v1/experiments/{experiment_id}", {}),
        ("trials", f"/api/v1/experiments/{experiment_id}/trials", {"limit": 0}),
        ("trials (again)", f"/api/v1/experiments/{experiment_id}/trials", {"limit": 0}),
        ("one trial", f"/api/v1/trials/{trial_id}", {}),
    ]
    timings = []
    for what, path, params in calls:
        start = time.perf_counter()
        response = api.http.get(path, params=params, timeout=600)
        response.raise_for_status()
        timings.append((what, time.perf_counter() - start, len(response.content)))
    return timings


def points_drawn(page: Page, selector: str) -> int:
    return int(page.get_attribute(selector, "data-points") or 0)


def time_to_chart(page: Page, url: str) -> tuple[float, str, int]:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('{CHART}')]
            .some(f => Number(f.getAttribute("data-points")) > 0)""",
        timeout=120_000,
    )
    elapsed = time.perf_counter() - start
    testid = page.eval_on_selector_all(
        CHART,
        """charts => charts.find(f => Number(f.getAttribute("data-points")) > 0)
            .getAttribute("data-testid")""",
    )
    return elapsed, testid, points_drawn(page, f'[data-testid="{testid}"]')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")

    with tempfile.TemporaryDirectory(prefix="bench-chart-") as tmp:
        workdir = Path(tmp)
        db = workdir / "flotilla.db"
        master = Master(workdir, f"sqlite:///{db}")
        master.start()
        try:
            api = Api(master, "determined")
            experiment_id = create_experiment(api, args.trials, args.points)
            trial_ids: list[int] = wait_for(
                f"{args.trials} trials",
                lambda: (
                    len(
                        t := api.get(
                            f"/api/v1/experiments/{experiment_id}/trials", params={"limit": 0}
                        ).json()["trials"]
                    )
                    == args.trials
                    and [trial["id"] for trial in t]
                ),
                timeout=120,
            )
            start = datetime.now(UTC) - timedelta(hours=3)
            began = time.perf_counter()
            for trial_id in trial_ids:
                insert(db, metric_rows(trial_id, 1, args.points, start))
            print(
                f"inserted {2 * len(trial_ids) * args.points:,} reports "
                f"({3 * len(trial_ids) * args.points:,} values) in "
                f"{time.perf_counter() - began:.0f} s"
            )
            timings = time_api(api, experiment_id, trial_ids[0])
            print()
            print("| API, one request (bearer token) | time | reply |")
            print("|---|--:|--:|")
            for what, seconds, size in timings:
                print(f"| {what} | {seconds * 1000:,.0f} ms | {size / 1024:,.0f} KB |")
            # A fresh master, so the page's first load finds the series cache empty.
            master.stop()
            master.start()
            results = measure(master, db, experiment_id, trial_ids[0], args, chromium)
        finally:
            master.stop()
    print()
    print(f"| {args.trials} trials × {args.points:,} points per metric | median | worst |")
    print("|---|--:|--:|")
    for label, values in results.items():
        if label.startswith("points"):
            print(f"| {label} | {values[0]:,.0f} | |")
            continue
        done = [v for v in values if v != math.inf]
        if not done:
            print(f"| {label} | > {NEW_POINT_LIMIT:.0f} s ({len(values)} of {len(values)}) | |")
            continue
        median, worst = statistics.median(values) * 1000, max(values) * 1000
        late = f" ({len(values) - len(done)} of {len(values)} > {NEW_POINT_LIMIT:.0f} s)"
        shown_worst = f"{worst:.0f} ms" if len(done) == len(values) else late.strip()
        print(f"| {label} | {median:,.0f} ms | {shown_worst} |")


def measure(
    master: Master,
    db: Path,
    experiment_id: int,
    trial_id: int,
    args: argparse.Namespace,
    chromium: str,
) -> dict[str, list[float]]:
    url = f"{master.url}/#/experiments/{experiment_id}"
    results: dict[str, list[float]] = {"cold: to a drawn chart": [], "warm: to a drawn chart": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(master.url + "/")
        page.fill("#username", "determined")
        page.fill("#password", "")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_test_id("whoami").wait_for()
        cold, testid, drawn = time_to_chart(page, url)
        results["cold: to a drawn chart"].append(cold)
        print(f"chart {testid}: {drawn:,} points drawn")
        for _ in range(args.rounds):
            page.goto(master.url + "/#/experiments")
            page.get_by_test_id("view-experiments").wait_for()
            warm, _testid, _drawn = time_to_chart(page, url)
            results["warm: to a drawn chart"].append(warm)
        results["points drawn on the chart"] = [float(drawn)]
        selector = f'[data-testid="{testid}"]'
        step = args.points
        appended: list[float] = []
        for _ in range(args.rounds):
            time.sleep(random.uniform(0.5, 1.5))
            page.wait_for_timeout(0)
            before = points_drawn(page, selector)
            step += 1
            insert(db, metric_rows(trial_id, step, step, datetime.now(UTC)))
            committed = time.perf_counter()
            try:
                page.wait_for_function(
                    f"""() => Number(document.querySelector('{selector}')
                        ?.getAttribute("data-points")) > {before}""",
                    timeout=NEW_POINT_LIMIT * 1000,
                )
                appended.append(time.perf_counter() - committed)
            except PlaywrightTimeout:
                appended.append(math.inf)
        results["new report: to its point on the open chart"] = appended
        browser.close()
    return results


if __name__ == "__main__":
    main()
