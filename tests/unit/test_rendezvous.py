"""The master's side of a multi-agent trial's rendezvous (``master.rendezvous``) and its endpoint,
``POST /api/v1/allocations/{id}/rendezvous``, in process with a stand-in scheduler and tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from master import auth
from master.api import allocations, errors
from master.rendezvous import Arrival, Rendezvous, RendezvousError, group_view

ALLOCATION = "task-1.1"
AGENTS = {"gpu-b": 2, "gpu-a": 1, "gpu-c": 1}


def rendezvous(agents: dict[str, dict[str, int]] | None = None) -> Rendezvous:
    known = {ALLOCATION: AGENTS} if agents is None else agents
    return Rendezvous(known.get)


def arrival(agent_id: str, port: int | None = None) -> Arrival:
    return Arrival(agent_id, f"10.0.0.{agent_id[-1]}", AGENTS[agent_id], port)


# ---- the module -------------------------------------------------------------------------------


def test_members_are_ordered_by_agent_id_with_running_rank_offsets() -> None:
    view = group_view(AGENTS, {a: arrival(a, port=100) for a in ("gpu-c", "gpu-b", "gpu-a")})
    assert view.ready and view.missing == ()
    assert [(m.agent_id, m.slots, m.rank_offset) for m in view.members] == [
        ("gpu-a", 1, 0),
        ("gpu-b", 2, 1),
        ("gpu-c", 1, 3),
    ]
    assert (view.master_addr, view.master_port) == ("10.0.0.a", 100)  # the chief: first by id


def test_ready_only_once_every_agent_arrived() -> None:
    group = rendezvous()
    first = group.arrive(ALLOCATION, arrival("gpu-b", port=7))
    assert not first.ready and first.missing == ("gpu-a", "gpu-c")
    assert (first.master_addr, first.master_port) == (None, None)
    assert not group.arrive(ALLOCATION, arrival("gpu-c")).ready
    assert not group.arrive(ALLOCATION, arrival("gpu-c")).ready  # repeating changes nothing
    done = group.arrive(ALLOCATION, arrival("gpu-a", port=9))
    assert done.ready and [m.agent_id for m in done.members] == ["gpu-a", "gpu-b", "gpu-c"]
    assert done.master_port == 9
    assert group.view(ALLOCATION) == done


def test_unknown_allocation_wrong_agent_and_wrong_slots_are_refused() -> None:
    group = rendezvous()
    with pytest.raises(RendezvousError) as unknown:
        group.arrive("other.1", arrival("gpu-a"))
    assert unknown.value.status == 404
    with pytest.raises(RendezvousError, match="agent 'gpu-z' holds no slots") as stranger:
        group.arrive(ALLOCATION, Arrival("gpu-z", "10.0.0.9", 1))
    assert stranger.value.status == 400
    with pytest.raises(RendezvousError, match=r"holds 2 slot\(s\) .*, not 1") as slots:
        group.arrive(ALLOCATION, Arrival("gpu-b", "10.0.0.2", 1))
    assert slots.value.status == 400


def test_waiters_wake_when_the_last_agent_arrives_and_when_the_allocation_ends() -> None:
    async def body() -> None:
        group = rendezvous({ALLOCATION: {"a": 1, "b": 1}, "x.1": {"a": 1, "b": 1}})
        group.arrive(ALLOCATION, Arrival("a", "h", 1, 5))
        waiting = asyncio.create_task(group.wait(ALLOCATION, 10))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        group.arrive(ALLOCATION, Arrival("b", "h", 1))
        assert (await asyncio.wait_for(waiting, 1)).ready
        assert not (await group.wait("x.1", 0.05)).ready  # times out: not ready

        group.arrive("x.1", Arrival("a", "h", 1))
        waiting = asyncio.create_task(group.wait("x.1", 10))
        await asyncio.sleep(0.05)
        await group.allocation_ended(SimpleNamespace(id="x.1"), 0, "done")  # type: ignore[arg-type]
        assert not (await asyncio.wait_for(waiting, 1)).ready
        assert group.view("x.1").members == ()  # forgotten

    asyncio.run(body())


# ---- the endpoint -----------------------------------------------------------------------------

TOKENS = {"token-1": ALLOCATION, "token-gone": "gone.1"}


def run_app(body: Callable[[httpx.AsyncClient], Awaitable[None]], monkeypatch: Any) -> None:
    """The allocations router with a scheduler that knows ``ALLOCATION`` on agents a and b, and
    tokens looked up in ``TOKENS``."""
    monkeypatch.setattr(auth, "allocation_of_token", lambda _s, token, _now: TOKENS.get(token))

    async def run_in_session(fn: Callable[[Any], Any]) -> Any:
        return fn(None)

    app = FastAPI()
    errors.install(app)
    app.include_router(allocations.router)
    app.state.master = SimpleNamespace(db=SimpleNamespace(run=run_in_session), clock=lambda: 0)
    app.state.rendezvous = rendezvous({ALLOCATION: {"a": 1, "b": 1}})

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://master") as client:
            await body(client)

    asyncio.run(main())


async def post(
    client: httpx.AsyncClient,
    agent_id: str,
    token: str = "token-1",
    allocation_id: str = ALLOCATION,
    timeout: int = 0,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/allocations/{allocation_id}/rendezvous",
        params={"timeoutSeconds": timeout},
        json={"agentId": agent_id, "address": f"10.1.1.{agent_id}", "slots": 1, "port": 4000},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_endpoint_long_polls_until_everyone_is_there(monkeypatch: Any) -> None:
    async def body(client: httpx.AsyncClient) -> None:
        chief = asyncio.create_task(post(client, "a", timeout=10))
        await asyncio.sleep(0.1)
        assert not chief.done()
        last = await post(client, "b")
        answer = (await asyncio.wait_for(chief, 5)).json()
        assert (
            answer
            == last.json()
            == {
                "ready": True,
                "members": [
                    {"agentId": "a", "address": "10.1.1.a", "slots": 1, "rankOffset": 0},
                    {"agentId": "b", "address": "10.1.1.b", "slots": 1, "rankOffset": 1},
                ],
                "missing": [],
                "masterAddr": "10.1.1.a",
                "masterPort": 4000,
            }
        )

    run_app(body, monkeypatch)


def test_endpoint_takes_only_the_allocations_own_token(monkeypatch: Any) -> None:
    async def body(client: httpx.AsyncClient) -> None:
        assert (await post(client, "a", token="someone-else")).status_code == 403
        no_token = await client.post(
            f"/api/v1/allocations/{ALLOCATION}/rendezvous",
            json={"agentId": "a", "address": "h", "slots": 1},
        )
        assert no_token.status_code == 401
        gone = await post(client, "a", token="token-gone", allocation_id="gone.1")
        assert gone.status_code == 404 and "not running" in gone.json()["message"]
        stranger = await post(client, "z")
        assert stranger.status_code == 400 and "holds no slots" in stranger.json()["message"]
        waiting = (await post(client, "a")).json()
        assert (waiting["ready"], waiting["missing"]) == (False, ["b"])

    run_app(body, monkeypatch)
