"""The agent protocol's sequence numbers and acks against a real master (SQLite and PostgreSQL):
links cut mid-stream from either side lose nothing and apply nothing twice; logs of an ended
allocation are taken until its agent's exit; a task that ends because its agent restarted,
came back without it, or did not come back, says which.

The agent here is this test, speaking the real protocol with ``agent.protocol``'s models, so it
can cut its socket at an exact message and replay what it likes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from agent import protocol
from tests.integration.cluster import JOIN_TOKEN, Api, Master, wait_for

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def start_master(tmp_path: Path, db_url: str, **config: Any) -> Master:
    # The master of this source tree, whatever tree the venv's console script points at.
    master = Master(tmp_path, db_url, env={"PYTHONPATH": str(REPO)}, **config)
    master.start()
    return master


class FakeAgent:
    def __init__(self, master: Master, agent_id: str = "fake-0") -> None:
        self.url = master.url.replace("http://", "ws://") + protocol.AGENT_WS_PATH
        self.agent_id = agent_id
        self.boot_id = uuid.uuid4().hex
        self.seq = 0

    @asynccontextmanager
    async def link(
        self, running: tuple[str, ...] = (), exited: tuple[str, ...] = ()
    ) -> AsyncIterator[tuple[ClientConnection, protocol.Welcome]]:
        async with connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {JOIN_TOKEN}"},
            ping_interval=None,
        ) as ws:
            hello = protocol.Hello(
                agent_id=self.agent_id,
                boot_id=self.boot_id,
                booted_at=datetime.now(UTC),
                version="test",
                resource_pool="default",
                slots=[protocol.SlotInfo(id=0, type=protocol.DeviceType.CPU)],
                running=[
                    protocol.RunningAllocation(allocation_id=a, pid=1, started_at=NOW)
                    for a in running
                ],
                exited=list(exited),
            )
            await ws.send(hello.model_dump_json())
            welcome = protocol.MasterMessageAdapter.validate_json(await ws.recv())
            assert isinstance(welcome, protocol.Welcome), welcome
            yield ws, welcome

    def number(self, message: protocol.Sequenced) -> protocol.Sequenced:
        self.seq += 1
        message.seq = self.seq
        return message


async def next_of(ws: ClientConnection, kind: str, timeout: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == kind:
                return message
            if message["type"] == "ping":
                await ws.send(protocol.Pong(seq=message["seq"]).model_dump_json())


def batch(allocation_id: str, lines: list[str]) -> protocol.LogBatch:
    entries = [protocol.LogEntry(timestamp=NOW, stdtype="stdout", line=line) for line in lines]
    return protocol.LogBatch(allocation_id=allocation_id, entries=entries)


def exited(allocation_id: str, code: int) -> protocol.AllocationExited:
    return protocol.AllocationExited(allocation_id=allocation_id, exit_code=code, ended_at=NOW)


async def run_command(api: Api, agent: FakeAgent, ws: ClientConnection) -> tuple[str, str]:
    """Submit a command; the fake agent gets it and says it started: (task id, allocation id)."""
    task_id = await asyncio.to_thread(api.run, ["true"])
    start = await next_of(ws, "start_allocation")
    started = protocol.AllocationStarted(
        allocation_id=start["allocation_id"], pid=1, started_at=NOW
    )
    await ws.send(agent.number(started).model_dump_json())
    return task_id, start["allocation_id"]


def output(api: Api, task_id: str) -> list[str]:
    return api.task_output(task_id)


def master_lines(api: Api, task_id: str) -> list[str]:
    return [e["message"] for e in api.logs(task_id) if e["source"] == "master"]


def test_links_cut_from_either_side_lose_nothing_and_apply_nothing_twice(
    tmp_path: Path, db_url: str
) -> None:
    master = start_master(tmp_path, db_url)
    api = Api(master)
    agent = FakeAgent(master)
    batches = [batch("", [f"line {b}.{i}" for i in range(50)]) for b in range(30)]

    async def scenario() -> str:
        async with agent.link() as (ws, welcome):
            assert welcome.last_seq == 0
            task_id, alloc = await run_command(api, agent, ws)
            sent = []
            for message in batches[:10]:
                message.allocation_id = alloc
                sent.append(agent.number(message))
                await ws.send(message.model_dump_json())
            ack = await next_of(ws, "ack")  # the master acknowledges within a fraction of a s
            assert 1 <= ack["seq"] <= agent.seq
            # The agent cuts its socket mid-stream, right after 10 more batches.
            for message in batches[10:20]:
                message.allocation_id = alloc
                sent.append(agent.number(message))
                await ws.send(message.model_dump_json())
        async with agent.link(running=(alloc,)) as (ws, welcome):
            # The master says what it applied; the agent replays far more than that (from the
            # first batch): the master must skip what it has.
            assert ack["seq"] <= welcome.last_seq <= agent.seq
            for message in sent:
                await ws.send(message.model_dump_json())
            for message in batches[20:25]:
                message.allocation_id = alloc
                sent.append(agent.number(message))
                await ws.send(message.model_dump_json())
            # The same agent connects again while this link is open: the master closes this one
            # from its side (a newer connection of the same agent) and takes the new one.
            async with agent.link(running=(alloc,)) as (ws2, welcome2):
                # What the old link had applied when the new one opened; it applies no more.
                assert welcome2.last_seq <= agent.seq
                replay = [m for m in sent if m.seq > welcome2.last_seq - 3]  # 3 dupes too
                for message in [*replay, *batches[25:]]:
                    if message.seq == 0:
                        message.allocation_id = alloc
                        agent.number(message)
                    await ws2.send(message.model_dump_json())
                final = agent.number(exited(alloc, 3))
                await ws2.send(final.model_dump_json())
                await ws2.send(final.model_dump_json())  # a duplicate exit is skipped too
                ack = await next_of(ws2, "ack")
                while ack["seq"] < final.seq:
                    ack = await next_of(ws2, "ack")
        return task_id

    task_id = asyncio.run(scenario())
    try:
        task = api.wait_ended(task_id)
        assert task["allocations"][0]["exitCode"] == 3
        expected = [e.line for b in batches for e in b.entries]
        assert output(api, task_id) == expected  # every line once, in order
        assert sum("exited with code 3" in line for line in master_lines(api, task_id)) == 1
    finally:
        master.stop()


def test_logs_of_an_ended_allocation_are_taken_until_its_agents_exit(
    tmp_path: Path, db_url: str
) -> None:
    master = start_master(tmp_path, db_url, agent_reconnect_wait="1s")
    api = Api(master)
    agent = FakeAgent(master)

    async def scenario() -> str:
        async with agent.link() as (ws, _):
            task_id, alloc = await run_command(api, agent, ws)
            await ws.send(agent.number(batch(alloc, ["before the cut"])).model_dump_json())
            await next_of(ws, "ack")
        # Away longer than agent_reconnect_wait: the master fails the task meanwhile.
        await asyncio.to_thread(api.wait_ended, task_id)
        async with agent.link(exited=(alloc,)) as (ws, welcome):
            assert welcome.reattach == []
            await ws.send(
                agent.number(batch(alloc, ["while away 1", "while away 2"])).model_dump_json()
            )
            await ws.send(agent.number(exited(alloc, 0)).model_dump_json())
            await ws.send(agent.number(batch(alloc, ["after its exit"])).model_dump_json())
            ack = await next_of(ws, "ack")
            while ack["seq"] < agent.seq:
                ack = await next_of(ws, "ack")
        return task_id

    task_id = asyncio.run(scenario())
    try:
        assert output(api, task_id) == ["before the cut", "while away 1", "while away 2"]
        reason = api.task(task_id)["allocations"][0]["exitReason"]
        assert "did not reconnect within 1s" in reason
        assert any(
            "reported the end of this task's process (exit code 0) after the master had ended it"
            in line
            for line in master_lines(api, task_id)
        )
    finally:
        master.stop()


@pytest.mark.parametrize("how", ["restarted", "came back without it", "did not come back"])
def test_a_task_whose_agent_lost_it_says_why(tmp_path: Path, db_url: str, how: str) -> None:
    master = start_master(tmp_path, db_url, agent_reconnect_wait="2s")
    api = Api(master)
    agent = FakeAgent(master)

    async def scenario() -> str:
        async with agent.link() as (ws, _):
            task_id, _alloc = await run_command(api, agent, ws)
            await next_of(ws, "ack")
        if how == "restarted":
            agent.boot_id, agent.seq = uuid.uuid4().hex, 0  # a new agent process
        if how != "did not come back":
            async with agent.link() as (ws, welcome):
                assert welcome.last_seq == (0 if how == "restarted" else 1)
                await asyncio.to_thread(api.wait_ended, task_id)
        return task_id

    task_id = asyncio.run(scenario())
    try:
        task = api.wait_ended(task_id)
        reason = task["allocations"][0]["exitReason"]
        expected = {
            "restarted": "agent 'fake-0' restarted (a new agent process started at ",
            "came back without it": "agent 'fake-0' reconnected but no longer runs this task",
            "did not come back": "agent 'fake-0' lost its connection to the master and did not "
            "reconnect within 2s",
        }[how]
        assert expected in reason
        assert "agent restarted?" not in reason
        wait_for(
            "the reason in the task log",
            lambda: any(expected in line for line in master_lines(api, task_id)),
        )
    finally:
        master.stop()
