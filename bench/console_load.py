"""The web console's first load: how many bytes a browser fetches, and how long until a person
sees the experiments table.

    .venv/bin/python -m bench.console_load [--rounds 5] [--experiments 50]

Bytes: the build in ``master/console/dist`` (``npm run build``; ``source scripts/bootstrap.sh``
builds it), each JavaScript and CSS file gzipped the way the master sends it
(``master.api.console``, gzip level 9): what ``index.html`` loads up front (its scripts,
stylesheets and module preloads) and every asset of the build (views split into chunks load
later).

Time: a real master (SQLite, no agents) on loopback holding ``--experiments`` queued
experiments of the digits example, and Debian's headless ``chromium`` driven by Playwright.
Each round opens a fresh browser context (empty cache, no session) and measures, from
``page.goto("/")``:

- *sign-in form*: the login view is visible (HTML, JS and CSS fetched, the app started, its
  ``GET /api/v1/me`` answered 401);
- *experiments table*: from clicking "Sign in" (user ``determined``, empty password) to the
  experiments table showing its rows;
- *reload*: ``page.reload()`` in the same tab (assets from the browser's cache, the session
  kept) to the table with rows again.

Prints a Markdown table of medians (and worst) over the rounds. No target is asserted here; the
issue's target is ≤ 250 KB of gzipped JavaScript.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from playwright.sync_api import Browser, sync_playwright

from cli.context import pack_context
from master.api.console import PACKAGED_DIST
from tests.integration.cluster import Api, Master

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_pytorch"
TEXT_ASSET = re.compile(r"\.(js|mjs|css)$")
LOADED_UP_FRONT = re.compile(r'(?:src|href)="(/assets/[^"]+\.(?:js|mjs|css))"')


def gzipped_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def build_sizes(dist: Path) -> dict[str, tuple[int, int]]:
    """``{"first load js": (raw, gzipped), ...}`` for the build in ``dist``."""
    index = (dist / "index.html").read_text()
    up_front = {dist / p.lstrip("/") for p in LOADED_UP_FRONT.findall(index)}
    every = {p for p in (dist / "assets").rglob("*") if TEXT_ASSET.search(p.name)}
    sizes: dict[str, tuple[int, int]] = {}
    for label, files in (("first load", up_front), ("whole build", every)):
        for kind, suffixes in (("JS", (".js", ".mjs")), ("CSS", (".css",))):
            chosen = [p for p in files if p.suffix in suffixes]
            raw = sum(p.stat().st_size for p in chosen)
            sizes[f"{label}, {kind} ({len(chosen)} files)"] = (
                raw,
                sum(gzipped_size(p) for p in chosen),
            )
    return sizes


def seed_experiments(master: Master, count: int) -> None:
    api = Api(master, "determined")
    config = yaml.safe_load((EXAMPLE / "const.yaml").read_text())
    definition = pack_context(EXAMPLE)
    for number in range(count):
        config["name"] = f"digits-{number:03d}"
        body = {"config": yaml.safe_dump(config), "modelDefinition": definition}
        response = api.post("/api/v1/experiments", json=body)
        response.raise_for_status()


FIRST_ROW = '[data-testid="experiments-table"] [data-testid^="experiment-row-"]'


def one_round(browser: Browser, master: Master) -> tuple[float, float, float]:
    """Seconds to the sign-in form, from "Sign in" to the table's rows, and a reload's."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        start = time.perf_counter()
        page.goto(master.url + "/")
        page.get_by_test_id("view-login").wait_for()
        form = time.perf_counter() - start
        page.fill("#username", "determined")
        page.fill("#password", "")
        row = page.locator(FIRST_ROW).first
        start = time.perf_counter()
        page.get_by_role("button", name="Sign in").click()
        row.wait_for()
        table = time.perf_counter() - start
        start = time.perf_counter()
        page.reload()
        row.wait_for()
        reload = time.perf_counter() - start
        assert page.get_by_test_id("whoami").inner_text() == "determined"
        return form, table, reload
    finally:
        context.close()


def measure(master: Master, rounds: int, chromium: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"sign-in form": [], "experiments table": [], "reload": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        one_round(browser, master)  # warms the master and the page cache
        for _ in range(rounds):
            for label, seconds in zip(times, one_round(browser, master), strict=True):
                times[label].append(seconds)
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--experiments", type=int, default=50)
    args = parser.parse_args()
    dist = PACKAGED_DIST
    if not (dist / "index.html").is_file():
        raise SystemExit(f"no build in {dist}: run `source scripts/bootstrap.sh` first")
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")

    print("| build in master/console/dist | raw | gzipped |")
    print("|---|--:|--:|")
    for label, (raw, zipped) in build_sizes(dist).items():
        print(f"| {label} | {raw / 1024:.1f} KB | {zipped / 1024:.1f} KB |")

    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        workdir = Path(tmp)
        master = Master(workdir, f"sqlite:///{workdir / 'flotilla.db'}")
        master.start()
        try:
            seed_experiments(master, args.experiments)
            times = measure(master, args.rounds, chromium)
        finally:
            master.stop()
    print()
    print(f"| headless chromium, {args.experiments} experiments | median | worst |")
    print("|---|--:|--:|")
    for label, values in times.items():
        median, worst = statistics.median(values) * 1000, max(values) * 1000
        print(f"| {label} | {median:.0f} ms | {worst:.0f} ms |")


if __name__ == "__main__":
    main()
