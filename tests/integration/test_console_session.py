"""The console's browser session against a live master, on SQLite and PostgreSQL: the login
cookie (Path=/api, HttpOnly, SameSite=Strict) works only with the CSRF header, bearer tokens
need none, and the proxy refuses the login cookie but takes a proxy ticket's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from master import auth
from tests.integration.cluster import Agent, Api, Master, wait_for
from tests.integration.console_helpers import started_master


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    yield from started_master(tmp_path, db_url)


def browser_login(master: Master) -> tuple[httpx.Client, str, str]:
    """A cookie-keeping client signed in as admin the console's way: its cookie, csrfToken and
    the Set-Cookie header."""
    browser = httpx.Client(base_url=master.url)
    response = browser.post("/api/v1/auth/login", json={"username": "admin", "password": ""})
    assert response.status_code == 200, response.text
    csrf = response.json()["csrfToken"]
    assert isinstance(csrf, str) and len(csrf) >= 32 and csrf != response.json()["token"]
    return browser, csrf, response.headers["set-cookie"]


def test_the_session_cookie_needs_the_csrf_header_and_bearer_tokens_do_not(
    master: Master,
) -> None:
    browser, csrf, set_cookie = browser_login(master)
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert "path=/api" in attributes and "httponly" in attributes
    assert "samesite=strict" in attributes and "secure" not in attributes  # plain http here

    # httpx sends the cookie only under /api, as a browser would.
    without = browser.get("/api/v1/me")
    assert without.status_code == 403, without.text
    assert without.json()["message"] == (
        "this request came from a browser without the console's CSRF header"
    )
    wrong = browser.get("/api/v1/me", headers={"X-Flotilla-Csrf": "0" * len(csrf)})
    assert wrong.status_code == 403
    right = browser.get("/api/v1/me", headers={"X-Flotilla-Csrf": csrf})
    assert right.status_code == 200 and right.json()["user"]["username"] == "admin"
    posted = browser.post(
        "/api/v1/commands",
        json={"config": {"entrypoint": "true"}},
        headers={"X-Flotilla-Csrf": csrf},
    )
    assert posted.status_code == 200, posted.text
    unsent = browser.post("/api/v1/commands", json={"config": {"entrypoint": "true"}})
    assert unsent.status_code == 403

    # Bearer tokens (the CLI, scripts) need no header; a CSRF token is no credential.
    assert Api(master).get("/api/v1/me").status_code == 200
    alone = httpx.get(f"{master.url}/api/v1/me", headers={"X-Flotilla-Csrf": csrf})
    assert alone.status_code == 401

    # Signing out needs the header too, and clears the cookie where it was set.
    assert browser.post("/api/v1/auth/logout").status_code == 403
    out = browser.post("/api/v1/auth/logout", headers={"X-Flotilla-Csrf": csrf})
    assert out.status_code == 200 and "path=/api" in out.headers["set-cookie"].lower()
    assert browser.get("/api/v1/me", headers={"X-Flotilla-Csrf": csrf}).status_code == 401


@pytest.fixture
def with_agent(tmp_path: Path, db_url: str) -> Iterator[Master]:
    """A master and one agent. The agent runs tasks unisolated: what is tested is the proxy's
    door, not the task's uid (and so it runs where task uids cannot reach this Python)."""
    server = Master(tmp_path, db_url)
    server.start()
    agent = Agent(tmp_path, server, "agent-0", slots=1, isolation="none")
    try:
        agent.start()
        api = Api(server)
        wait_for("the agent to join", lambda: len(api.agents()) == 1, logs=[agent.log_path])
        yield server
    finally:
        agent.stop()
        server.stop()


def test_the_proxy_refuses_the_session_cookie_but_takes_a_ticket_cookie(
    with_agent: Master,
) -> None:
    from tests.integration.test_proxy import start_service

    api = Api(with_agent)
    task_id = start_service(api)
    session_cookie = {auth.SESSION_COOKIE: api.token}
    refused = httpx.get(
        f"{with_agent.url}/proxy/{task_id}/ping",
        cookies=session_cookie,
        headers={"X-Flotilla-Csrf": auth.csrf_token(api.token)},
    )
    assert refused.status_code == 401, refused.text
    assert "not the console's session cookie" in refused.json()["message"]
    # The same token as a bearer (the CLI's way) still opens it.
    assert api.get(f"/proxy/{task_id}/ping").status_code == 200

    ticket = api.post(f"/api/v1/tasks/{task_id}/proxy-ticket").json()
    browser = httpx.Client(base_url=with_agent.url)
    assert browser.get(ticket["url"], follow_redirects=False).status_code == 303
    assert browser.get(f"/proxy/{task_id}/ping").status_code == 200
