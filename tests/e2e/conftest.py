"""The console's browser tests: Debian's ``chromium`` driven by Playwright for Python (never
``playwright install``), against a real master serving the real build of master/console.

- The browser is started once per module, and stopped after it: while Playwright's sync API is
  started it keeps an event loop running in the main thread, and every later test calling
  ``asyncio.run`` would fail. Each test gets a fresh context (cookies and sessionStorage of its
  own), so signing in as one user never leaks into the next test.
- Without chromium the tests are skipped with the reason, unless ``FLOTILLA_REQUIRE_BROWSER`` is
  set (CI sets it), when they fail: CI must never skip them silently. ``FLOTILLA_CHROMIUM`` names
  another browser binary.
- Without a build (master/console/dist) they fail: ``source scripts/bootstrap.sh`` builds it.
- Screenshots go to ``$FLOTILLA_SCREENSHOTS`` (default ``build/screenshots``), one PNG per view
  and viewport, for a person to look at; docs/console.md shows copies of them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIST = ROOT / "master" / "console" / "dist"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TRAVERSABLE = 0o711


def chromium_path() -> str | None:
    return os.environ.get("FLOTILLA_CHROMIUM") or shutil.which("chromium")


def screenshot_dir() -> Path:
    configured = os.environ.get("FLOTILLA_SCREENSHOTS")
    path = Path(configured) if configured else ROOT / "build" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def chromium() -> str:
    """The browser binary; checked before any cluster starts (autouse, session-wide)."""
    executable = chromium_path()
    if executable is None:
        missing = "chromium is not installed (apt-get install chromium, or set FLOTILLA_CHROMIUM)"
        if os.environ.get("FLOTILLA_REQUIRE_BROWSER"):
            pytest.fail(f"FLOTILLA_REQUIRE_BROWSER is set but {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    if not (CONSOLE_DIST / "index.html").is_file():
        pytest.fail(
            f"the console is not built ({CONSOLE_DIST} has no index.html): run "
            "`source scripts/bootstrap.sh` or `cd master/console && npm ci && npm run build`"
        )
    return executable


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    executable = chromium
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Any]:
    """``new_context(viewport=PHONE)``: a fresh browser context in UTC (so datetime-local inputs
    read as the API's UTC), closed after the test."""
    opened: list[BrowserContext] = []

    def make(viewport: dict[str, int] | None = None) -> BrowserContext:
        context = browser.new_context(viewport=viewport or DESKTOP, timezone_id="UTC")
        context.set_default_timeout(15_000)
        opened.append(context)
        return context

    yield make
    for context in opened:
        context.close()


@pytest.fixture
def shoot() -> Any:
    """``shoot(page, "fleet")`` saves ``<dir>/fleet.png`` (``fleet-phone.png`` at 390 wide)."""
    directory = screenshot_dir()

    def save(page: Page, name: str, full_page: bool = False) -> Path:
        width = (page.viewport_size or DESKTOP)["width"]
        suffix = "-phone" if width < 600 else ""
        path = directory / f"{name}{suffix}.png"
        if full_page:  # from the top, or the sticky top bar is drawn mid-page
            page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return save


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module-wide temp dir that task uids can pass through when running as root (see
    tests/conftest.py)."""
    path = tmp_path_factory.mktemp("console-e2e")
    if os.geteuid() == 0:
        base = tmp_path_factory.getbasetemp()
        for directory in (base, *(p for p in path.parents if base in p.parents), path):
            directory.chmod(TRAVERSABLE)
    return path
