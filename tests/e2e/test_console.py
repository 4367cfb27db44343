"""The web console in headless Chromium against a real cluster: a master (SQLite) whose one pool
is elastic (the local provider launches agent processes for queued work and stops them after
8 s idle), so every view has real data: a training experiment, a notebook, instances that come
and go with their cost.

One cluster for the module; the tests run in order and the later ones reuse what the earlier
ones left (instances that ran, cost that accrued). Every view is photographed at 1280×800, and
a few at 390×844, into $FLOTILLA_SCREENSHOTS (see conftest.py).

Everything is driven through the test hooks in /work/briefs/console-contract.md (data-testid
attributes, ids, button texts), which the views promise to keep.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import BrowserContext, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from cli.context import pack_context
from tests.e2e.conftest import PHONE
from tests.integration.cluster import Api, Master, kill_provisioned_agents, running_cluster
from tests.integration.cluster import wait_for as wait_until
from tests.integration.test_cli import Cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_pytorch"
IDLE_PERIOD_SECONDS = 8
POOL = [
    {
        "pool_name": "default",
        "provider": {
            "type": "local",
            "instance_slots": 2,
            "min_instances": 0,
            "max_instances": 2,
            "max_idle_agent_period": f"{IDLE_PERIOD_SECONDS}s",
            "provisioning_tick": "1s",
            "prices": {"local": 3.6},  # a cent a second: a short test still costs something
        },
    }
]
ADMIN_VIEWS = {"Cluster", "Fleet", "Scale events", "Users"}
USER_VIEWS = {"Experiments", "Tasks", "Queue", "Cost"}
CSRF_FETCH = """async (path) => (await fetch(path, {
    credentials: "same-origin",
    headers: {"X-Flotilla-Csrf": sessionStorage.getItem("flotilla.csrf") ?? ""},
})).status"""

expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
def started_at() -> datetime:
    """Before the cluster's first instance: where the cost test's range begins."""
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def master(module_tmp: Path, started_at: datetime) -> Iterator[Master]:
    url = f"sqlite:///{module_tmp / 'flotilla.db'}"
    try:
        for running, _ in running_cluster(module_tmp, url, agents=0, resource_pools=POOL):
            yield running
    finally:
        kill_provisioned_agents(module_tmp)  # they run in their own sessions


def sign_in(context: BrowserContext, master: Master, username: str) -> Page:
    """Sign in through the login form with the empty password, as Determined's docs say."""
    page = context.new_page()
    page.goto(master.url + "/")
    expect(page.get_by_test_id("view-login")).to_be_visible()
    page.fill("#username", username)
    page.fill("#password", "")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_have_text(username)
    return page


def open_view(page: Page, master: Master, route: str, view: str) -> None:
    page.goto(f"{master.url}/#/{route}")
    expect(page.get_by_test_id(f"view-{view}")).to_be_visible()


def nav_links(page: Page) -> set[str]:
    texts: list[str] = page.eval_on_selector_all(
        "nav a", "links => links.map(a => a.textContent.trim())"
    )
    return set(texts)


def number(page: Page, selector: str, attribute: str) -> float | None:
    value = page.get_attribute(selector, attribute, timeout=1_000)
    return float(value) if value not in (None, "") else None


def wait_for_growth(
    page: Page, selector: str, attribute: str, above: float, seconds: float
) -> float:
    """Wait until ``attribute`` of ``selector`` exceeds ``above``, without reloading the page."""
    page.wait_for_function(
        """([selector, attribute, above]) => {
            const node = document.querySelector(selector);
            return node !== null && Number(node.getAttribute(attribute)) > above;
        }""",
        arg=[selector, attribute, above],
        timeout=seconds * 1000,
    )
    value = number(page, selector, attribute)
    assert value is not None
    return value


def fits_sideways(page: Page) -> bool:
    """Every table on the page fits its box: nothing to scroll sideways (long reasons wrap)."""
    return bool(
        page.evaluate(
            """() => [...document.querySelectorAll('.table-scroll')]
                .every((box) => box.scrollWidth <= box.clientWidth + 1)"""
        )
    )


def create_experiment(api: Api, config_file: str, epochs: int | None = None) -> int:
    config = yaml.safe_load((EXAMPLE / config_file).read_text())
    if epochs is not None:
        config["searcher"]["max_length"] = {"epochs": epochs}
    body = {"config": yaml.safe_dump(config), "modelDefinition": pack_context(EXAMPLE)}
    response = api.post("/api/v1/experiments", json=body)
    assert response.status_code == 200, response.text
    experiment_id: int = response.json()["experiment"]["id"]
    return experiment_id


def alive_instances(api: Api) -> list[dict[str, Any]]:
    reply = api.get("/api/v1/instances")
    assert reply.status_code == 200, reply.text
    return [i for i in reply.json()["instances"] if i["state"] != "terminated"]


def test_a_user_signs_in_without_a_password_and_sees_no_admin_view(
    master: Master, new_context: Any, shoot: Any
) -> None:
    page = new_context().new_page()
    page.goto(master.url + "/")
    expect(page.get_by_test_id("view-login")).to_be_visible()
    assert page.url.endswith("#/login")
    shoot(page, "login")
    page.fill("#username", "determined")
    page.fill("#password", "not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_test_id("whoami")).to_have_count(0)

    page = sign_in(new_context(), master, "determined")
    expect(page.get_by_test_id("view-experiments")).to_be_visible()
    assert page.url.endswith("#/experiments")
    links = nav_links(page)
    assert links >= USER_VIEWS, links
    assert not ADMIN_VIEWS & links, links
    for route in ("fleet", "cluster", "events", "users"):
        page.goto(f"{master.url}/#/{route}")
        expect(page.get_by_test_id("forbidden")).to_be_visible()
        expect(page.get_by_test_id("forbidden")).to_contain_text("Admins only")
    shoot(page, "forbidden")
    # The browser's own session (cookie + CSRF header) is refused by the admin APIs, and the
    # cookie alone (what a page elsewhere, or a notebook's JavaScript, could send) by every API.
    assert page.evaluate(CSRF_FETCH, "/api/v1/me") == 200
    assert page.evaluate("async () => (await fetch('/api/v1/me')).status") == 403
    assert page.evaluate(CSRF_FETCH, "/api/v1/instances") == 403
    assert page.evaluate(CSRF_FETCH, "/api/v1/scale-events") == 403

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_test_id("view-login")).to_be_visible()
    assert page.evaluate(CSRF_FETCH, "/api/v1/me") == 401

    phone = new_context(PHONE).new_page()
    phone.goto(master.url + "/")
    expect(phone.get_by_test_id("view-login")).to_be_visible()
    shoot(phone, "login")


def test_the_learning_curve_and_the_logs_grow_while_digits_trains(
    master: Master, new_context: Any, shoot: Any
) -> None:
    api = Api(master, "determined")
    # Long enough to still be training through every check below on a fast machine (the test
    # kills it when done): the checks watch points and log lines arrive while it trains.
    experiment_id = create_experiment(api, "const.yaml", epochs=200)
    try:
        page = sign_in(new_context(), master, "determined")
        expect(page.get_by_test_id(f"experiment-row-{experiment_id}")).to_be_visible()
        open_view(page, master, f"experiments/{experiment_id}", "experiment")

        # The agent is launched for the trial, the trial starts and reports: the chart's points
        # arrive and keep arriving, without a reload.
        chart = 'figure[data-testid^="chart-training-"], figure[data-testid^="chart-validation-"]'
        first = wait_for_growth(page, chart, "data-points", 0, seconds=120)
        chart_id = page.get_attribute(chart, "data-testid")
        selector = f'figure[data-testid="{chart_id}"]'
        more = wait_for_growth(page, selector, "data-points", first, seconds=60)
        assert more > first
        # The experiment's progress follows its trial's reports while it trains.
        wait_until(
            "the experiment's progress to move while its trial trains",
            lambda: (
                0
                < api.get(f"/api/v1/experiments/{experiment_id}").json()["experiment"]["progress"]
                < 1
            ),
            timeout=60,
        )
        page.get_by_label("Log scale").check()
        expect(page.locator(selector)).to_be_visible()
        page.get_by_label("Log scale").uncheck()

        trial_id = wait_until(
            "the trial to exist",
            lambda: (
                (t := api.get(f"/api/v1/experiments/{experiment_id}/trials").json()["trials"])
                and t[0]["id"]
            ),
        )
        expect(page.get_by_test_id(f"trial-row-{trial_id}")).to_be_visible()
        open_view(page, master, f"trials/{trial_id}", "trial")
        lines = page.get_by_test_id("trial-logs").locator(".log-line")
        expect(lines.first).to_be_visible()
        expect(page.get_by_label("Follow")).to_be_checked()
        seen = lines.count()
        page.wait_for_function(
            """seen => document.querySelectorAll('[data-testid="trial-logs"] .log-line').length
                > seen""",
            arg=seen,
            timeout=60_000,
        )
        search = page.get_by_role("searchbox", name="Search logs")
        search.fill("validation after")
        expect(lines.first).to_contain_text("validation after")
        shown = lines.all_inner_texts()
        assert shown and all("validation after" in line for line in shown), shown
        search.fill("")
        page.get_by_role("button", name="Jump to end").click()
        shoot(page, "trial", full_page=True)

        open_view(page, master, f"experiments/{experiment_id}", "experiment")
        expect(page.locator(selector)).to_be_visible()
        wait_for_growth(page, selector, "data-points", more - 1, seconds=30)
        shoot(page, "experiment", full_page=True)

        open_view(page, master, "experiments", "experiments")
        expect(page.get_by_test_id(f"experiment-row-{experiment_id}")).to_be_visible()
        shoot(page, "experiments")
        phone = sign_in(new_context(PHONE), master, "determined")
        open_view(phone, master, f"experiments/{experiment_id}", "experiment")
        expect(phone.locator(selector)).to_be_visible()
        shoot(phone, "experiment")
        open_view(phone, master, "experiments", "experiments")
        shoot(phone, "experiments")
    finally:
        api.post(f"/api/v1/experiments/{experiment_id}/kill")


def test_a_notebook_started_from_the_cli_opens_from_the_console(
    master: Master, module_tmp: Path, new_context: Any, shoot: Any
) -> None:
    cli = Cli(module_tmp / "cli-home", master.url)
    as_user = {"DET_USER": "determined", "DET_PASS": ""}
    started = cli.ok("notebook", "start", "--no-browser", env=as_user)
    assert "Jupyter Notebook is running at" in started, started
    api = Api(master, "determined")
    notebook_id = api.get("/api/v1/notebooks").json()["notebooks"][-1]["id"]
    try:
        context = new_context()
        page = sign_in(context, master, "determined")
        open_view(page, master, "tasks", "tasks")
        row = page.get_by_test_id(f"task-row-{notebook_id}")
        expect(row).to_be_visible()
        open_button = row.get_by_role("button", name="Open")
        expect(open_button).to_be_enabled()
        shoot(page, "tasks")
        with context.expect_page() as opened:
            open_button.click()
        notebook = opened.value
        notebook.set_default_timeout(60_000)
        expect(notebook).to_have_title(re.compile("JupyterLab"), timeout=60_000)
        assert f"/proxy/{notebook_id}/" in notebook.url
        expect(notebook.locator("#jp-main-dock-panel")).to_be_visible(timeout=60_000)
        shoot(notebook, "notebook")
        # The notebook's pages run its user's JavaScript on the master's origin: opened without
        # an opener, in a tab without the console's CSRF token, they cannot use the console's
        # session (its cookie alone is refused).
        assert notebook.evaluate("window.opener === null")
        assert notebook.evaluate("sessionStorage.getItem('flotilla.csrf')") is None
        assert notebook.evaluate("async () => (await fetch('/api/v1/me')).status") == 403
    finally:
        api.post(f"/api/v1/notebooks/{notebook_id}/kill")


def test_the_fleet_grows_for_queued_work_and_an_idle_instance_counts_down_to_termination(
    master: Master, new_context: Any, shoot: Any
) -> None:
    api = Api(master)
    wait_until("no instance to be alive", lambda: alive_instances(api) == [], timeout=90)
    page = sign_in(new_context(), master, "admin")
    assert nav_links(page) >= ADMIN_VIEWS | USER_VIEWS
    open_view(page, master, "fleet", "fleet")
    rows = page.locator('[data-testid^="instance-row-"]')
    listed = len(api.get("/api/v1/instances").json()["instances"])
    expect(rows).to_have_count(listed)

    # Three 2-slot jobs for a pool of at most two 2-slot instances: two instances are launched,
    # the third job waits in the queue (with its reason) until one is free.
    work = [api.run(f"echo fleet test {n}; sleep 12", slots=2) for n in range(3)]
    open_view(page, master, "queue", "queue")
    waiting = page.get_by_test_id(f"job-row-{work[2]}")
    expect(waiting).to_be_visible()
    # The two launching instances are for the first two jobs; the third waits for the cap.
    expect(waiting).to_contain_text("at max_instances 2", timeout=20_000)
    shoot(page, "queue")

    open_view(page, master, "fleet", "fleet")
    expect(rows).to_have_count(listed + 2, timeout=60_000)
    launched = wait_until(
        "two instances to run the work",
        lambda: (
            len(alive := alive_instances(api)) == 2
            and any(i["allocations"] for i in alive)
            and alive
        ),
        timeout=60,
    )
    busy = next(i for i in launched if i["allocations"])
    row = page.get_by_test_id(f"instance-row-{busy['id']}")
    expect(row).to_contain_text("busy", timeout=60_000)
    assert busy["launchReason"], busy
    expect(row).to_contain_text(busy["launchReason"][:24])
    assert fits_sideways(page), "the Fleet's table scrolls sideways at 1280 wide"
    shoot(page, "fleet-busy")
    open_view(page, master, "cluster", "cluster")
    expect(page.get_by_test_id("pool-card-default")).to_be_visible()
    shoot(page, "cluster", full_page=True)
    open_view(page, master, "fleet", "fleet")

    # The first instance to go idle counts down to its termination, live.
    countdown = '[data-testid="idle-countdown"][data-seconds]'
    page.wait_for_selector(countdown, timeout=60_000)
    idle_id = page.eval_on_selector(
        countdown, "node => node.closest('[data-testid^=\"instance-row-\"]').dataset.testid"
    )
    assert idle_id in {f"instance-row-{i['id']}" for i in launched}, idle_id
    row = page.get_by_test_id(idle_id)
    expect(row).to_contain_text("idle")
    mine = f'[data-testid="{idle_id}"] {countdown}'
    first = number(page, mine, "data-seconds")
    assert first is not None and 0 <= first <= IDLE_PERIOD_SECONDS
    shoot(page, "fleet")
    page.wait_for_function(
        """([selector, first]) => {
            const node = document.querySelector(selector);
            return node === null || Number(node.getAttribute("data-seconds")) < first;
        }""",
        arg=[mine, first],
        timeout=10_000,
    )
    expect(row).to_contain_text("terminated", timeout=60_000)
    expect(page.locator(mine)).to_have_count(0)
    for task_id in work:
        api.wait_ended(task_id, timeout=90)

    open_view(page, master, "events", "events")
    expect(page.locator('[data-testid^="event-row-"]').first).to_be_visible()
    assert fits_sideways(page), "the Scale events table scrolls sideways at 1280 wide"
    shoot(page, "events")
    open_view(page, master, "users", "users")
    expect(page.get_by_test_id("user-row-determined")).to_be_visible()
    shoot(page, "users")

    phone = sign_in(new_context(PHONE), master, "admin")
    open_view(phone, master, "fleet", "fleet")
    expect(phone.get_by_test_id(idle_id)).to_be_attached()
    shoot(phone, "fleet")


def wait_for_usd(page: Page, testid: str, usd: float) -> None:
    """Wait until the page shows ``usd`` (to a millionth) in ``data-usd`` of ``testid``."""
    selector = f'[data-testid="{testid}"]'
    try:
        page.wait_for_function(
            """([selector, usd]) => {
                const node = document.querySelector(selector);
                const shown = node === null ? NaN : Number(node.getAttribute("data-usd"));
                return Math.abs(shown - usd) < 1e-6;
            }""",
            arg=[selector, usd],
            timeout=20_000,
        )
    except PlaywrightTimeout:
        shown = page.get_attribute(selector, "data-usd", timeout=1_000)
        raise AssertionError(f"{testid}: the page shows data-usd={shown}, the API {usd}") from None


def minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_cost_page_totals_equal_the_api(
    master: Master, started_at: datetime, new_context: Any, shoot: Any
) -> None:
    # A closed range in the past (datetime-local inputs hold minutes), covering the instances
    # the earlier tests ran, taken once every instance has ended: an instance or allocation
    # still ending would get its end time recorded inside the range between the API's reading
    # and the page's, and the figures would move while they are compared.
    wait_until("every instance to end", lambda: alive_instances(Api(master)) == [], timeout=120)
    until = minute(datetime.now(UTC))
    if until <= minute(started_at):
        time.sleep(61 - datetime.now(UTC).second)
        until = minute(datetime.now(UTC))
    since = minute(started_at) - timedelta(minutes=1)
    window = {"since": iso(since), "until": iso(until)}

    for username in ("admin", "determined"):
        api = Api(master, username)
        reply = api.get("/api/v1/cost", params=window)
        assert reply.status_code == 200, reply.text
        report = reply.json()
        if username == "admin":
            assert report["totalUsd"] > 0, report
        page = sign_in(new_context(), master, username)
        open_view(page, master, "cost", "cost")
        page.fill("#cost-since", since.strftime("%Y-%m-%dT%H:%M"))
        page.fill("#cost-until", until.strftime("%Y-%m-%dT%H:%M"))
        page.locator("#cost-until").press("Enter")
        wait_for_usd(page, "cost-total", report["totalUsd"])
        idle = number(page, '[data-testid="cost-idle"]', "data-usd")
        if username == "admin":
            assert idle is not None and abs(idle - report["idleUsd"]) < 1e-6
        expect(page.get_by_test_id("cost-efficiency")).to_be_visible()
        expect(page.get_by_role("link", name="Download CSV")).to_be_visible()
        if username == "admin":
            shoot(page, "cost-range", full_page=True)
            page.get_by_role("button", name="Last hour").click()
            expect(page.get_by_test_id("cost-total")).to_be_visible()
            wait_for_growth(page, '[data-testid="chart-cost-usd"]', "data-points", 0, seconds=20)
            shoot(page, "cost", full_page=True)
            phone = sign_in(new_context(PHONE), master, username)
            open_view(phone, master, "cost", "cost")
            shoot(phone, "cost")
