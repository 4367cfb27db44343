"""The scheduler under many events: passes batch what queued up, the agent list pages like
Determined's, and ``/debug/scheduler`` says how it keeps up. A real master and fake agents
speaking the real protocol (``bench/fake_agents.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.protocol import MasterMessage, StartAllocation
from bench.fake_agents import FakeAgents
from master import models
from master.logs import read_logs
from master.scheduler.state import AgentConnected, AllocationState
from master.state import MasterState
from tests.integration.cluster import JOIN_TOKEN, Api, Master, wait_for
from tests.integration.test_scheduler_loop import FakeLink, exit_on, hello, run, submit
from tests.integration.test_security_tokens import PASSWORD, make_user

COMMANDS = 40


@pytest.fixture
def master(tmp_path: Path, db_url: str) -> Iterator[Master]:
    master = Master(tmp_path, db_url)
    master.start()
    try:
        yield master
    finally:
        master.stop()


async def _burst(master: Master, token: str) -> tuple[list[str], dict[str, Any]]:
    """Five fake agents of 4 slots; COMMANDS commands submitted at once; wait until all end."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        FakeAgents(master.url, JOIN_TOKEN, count=5, slots=4) as agents,
        httpx.AsyncClient(base_url=master.url, headers=headers, timeout=60) as http,
    ):
        config = {"config": {"entrypoint": ["true"], "resources": {"slots": 1}}}
        replies = await asyncio.gather(
            *(http.post("/api/v1/commands", json=config) for _ in range(COMMANDS))
        )
        assert [r.status_code for r in replies] == [200] * COMMANDS, replies[0].text
        for _ in range(600):
            debug = (await http.get("/debug/scheduler")).json()
            if agents.exited == COMMANDS and debug["allocations"] == {"queued": 0, "running": 0}:
                break
            await asyncio.sleep(0.1)
        assert agents.failures() == []
        return [r.json()["command"]["id"] for r in replies], debug


def test_a_burst_of_submissions_runs_in_batched_passes(master: Master) -> None:
    api = Api(master)
    ids, debug = asyncio.run(_burst(master, api.token))
    passes = debug["passes"]
    # Every command and every agent report is an event; some passes took several at once.
    assert passes["events"] >= 3 * COMMANDS
    assert passes["count"] < passes["events"] and passes["eventsMax"] > 1
    assert passes["p99Ms"] >= passes["p50Ms"] > 0 and debug["loopLag"]["p99Ms"] >= 0
    assert debug["queueLength"] == 0 and debug["agents"] == 5
    for task_id in ids[:3]:
        task = api.task(task_id)
        assert task["endTime"] and task["allocations"][0]["exitCode"] == 0
        lines = [e["message"] for e in api.logs(task_id)]
        assert lines[0].startswith("queued: 1 slot(s)") and lines[-1].startswith("exited")


def test_scheduler_figures_are_for_admins_only(master: Master) -> None:
    admin = Api(master)
    make_user(admin, "ordinary")
    ordinary = Api(master, "ordinary", PASSWORD)
    assert ordinary.get("/debug/scheduler").status_code == 403
    assert httpx.get(f"{master.url}/debug/scheduler").status_code == 401
    assert admin.get("/debug/scheduler").json()["passes"]["count"] >= 0


async def _with_agents(master: Master, token: str) -> list[dict[str, Any]]:
    async with FakeAgents(master.url, JOIN_TOKEN, count=5, slots=1):
        http = httpx.AsyncClient(
            base_url=master.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        queries: list[dict[str, Any]] = [
            {},
            {"offset": 1, "limit": 2},
            {"orderBy": "ORDER_BY_DESC", "limit": 2},
            {"offset": -2},
            {"sortBy": "SORT_BY_TIME", "label": "ignored"},
            {"sortBy": "SORT_BY_NAME"},
        ]
        async with http:
            return [(await http.get("/api/v1/agents", params=q)).json() for q in queries]


def test_agent_list_pages_like_determined(master: Master) -> None:
    api = Api(master)
    every, middle, last_two, from_end, by_time, bad = asyncio.run(_with_agents(master, api.token))
    ids = [f"fake-{i}" for i in range(5)]
    assert [a["id"] for a in every["agents"]] == ids
    assert every["pagination"] == {
        "offset": 0,
        "limit": 0,
        "startIndex": 0,
        "endIndex": 5,
        "total": 5,
    }
    assert [a["id"] for a in middle["agents"]] == ids[1:3]
    assert middle["pagination"]["startIndex"] == 1 and middle["pagination"]["endIndex"] == 3
    assert [a["id"] for a in last_two["agents"]] == ["fake-4", "fake-3"]
    assert [a["id"] for a in from_end["agents"]] == ids[3:]
    times = [a["registeredTime"] for a in by_time["agents"]]
    assert times == sorted(times) and len(times) == 5
    assert "sortBy: 'SORT_BY_NAME' is not one of" in bad["error"]["error"]
    slot = every["agents"][0]["slots"]["/agents/fake-0/slots/0"]
    assert slot["enabled"] and slot["container"] is None
    wait_for("the fake agents to leave", lambda: api.get("/api/v1/agents").json()["agents"] == [])


class SlowLink(FakeLink):
    """Records, for each message, whether its allocation's start was stored by then."""

    def __init__(self, state: MasterState) -> None:
        super().__init__()
        self.state = state
        self.stored_at_send: list[str] = []

    async def send(self, message: MasterMessage) -> None:
        if isinstance(message, StartAllocation):
            row = await self.state.db.run(
                lambda s: s.get_one(models.Allocation, message.allocation_id)
            )
            self.stored_at_send.append(row.state)
        await super().send(message)


def test_a_pass_batches_events_and_stores_before_it_sends_or_answers(
    db_url: str, tmp_path: Path
) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        link = SlowLink(state)
        await scheduler.call(AgentConnected(hello=hello("a", 8), link=link))
        before = scheduler.stats.passes
        submitted = await asyncio.gather(*(submit(state, 1) for _ in range(8)))
        # Eight submissions queued while the first pass ran: far fewer passes than events.
        assert scheduler.stats.passes - before < 8
        assert sorted(link.started()) == sorted(s.allocation_id for s in submitted)
        # Every start went out only once its allocation was stored as starting.
        assert link.stored_at_send == [AllocationState.STARTING.value] * 8
        # Answered only once stored: the queued line and the state are in the database.
        for s in submitted:
            lines = await state.db.run(
                partial(read_logs, task_ids=s.task_id, after_id=0, limit=None)
            )
            assert lines[0].log.startswith("queued: 1 slot(s)")
        first = submitted[0].allocation_id
        await exit_on(state, link, "a", first, 0)
        row = await state.db.run(lambda s: s.get_one(models.Allocation, first))
        assert row.state == AllocationState.TERMINATED.value and row.exit_code == 0
        assert first not in scheduler.allocations

    run(db_url, tmp_path, body)
