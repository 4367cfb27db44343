"""The scheduler's event loop against a real database (SQLite and PostgreSQL) and fake agent
links: agents that vanish, come back, or never start what they were given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.protocol import (
    PROTOCOL_VERSION,
    AllocationExited,
    AllocationStarted,
    DeviceType,
    Hello,
    KillAllocation,
    MasterMessage,
    Reject,
    RunningAllocation,
    SlotInfo,
    StartAllocation,
    Welcome,
)
from master import models
from master.app import bootstrap
from master.config import load_config
from master.db import Database, migrate
from master.logs import LogStore
from master.scheduler.loop import Scheduler
from master.scheduler.state import (
    AgentConnected,
    AgentDisconnected,
    AgentReport,
    AllocationState,
)
from master.state import MasterState, utc_now
from master.tasks import TaskSpec, submit_task

RECONNECT_WAIT = 0.6


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[MasterMessage] = []
        self.closed: str | None = None

    async def send(self, message: MasterMessage) -> None:
        self.sent.append(message)

    async def close(self, reason: str) -> None:
        self.closed = reason

    def started(self) -> list[str]:
        return [m.allocation_id for m in self.sent if isinstance(m, StartAllocation)]


def hello(
    agent_id: str,
    slots: int,
    running: tuple[str, ...] = (),
    version: int = PROTOCOL_VERSION,
    boot_id: str = "boot-1",
) -> Hello:
    return Hello(
        agent_id=agent_id,
        boot_id=boot_id,
        booted_at=utc_now(),
        version="test",
        resource_pool="default",
        slots=[SlotInfo(id=i, type=DeviceType.CPU) for i in range(slots)],
        running=[RunningAllocation(allocation_id=a, pid=1, started_at=utc_now()) for a in running],
        protocol_version=version,
    )


async def master_state(db_url: str, tmp_path: Path) -> MasterState:
    config = load_config(
        None,
        environ={},
        data_dir=str(tmp_path),
        db={"url": db_url},
        agent_reconnect_wait=RECONNECT_WAIT,
    )
    db = Database(config.database_url)
    migrate(db.engine)
    cluster_id = await db.run(bootstrap)
    logs = LogStore(db)
    scheduler = Scheduler(config, db, logs, utc_now)
    await scheduler.start()
    return MasterState(config, db, logs, scheduler, cluster_id, "m", utc_now(), "token")


def run(db_url: str, tmp_path: Path, body: Callable[[MasterState], Awaitable[None]]) -> None:
    async def main() -> None:
        state = await master_state(db_url, tmp_path)
        try:
            await body(state)
        finally:
            await state.scheduler.stop()
            state.db.close()

    asyncio.run(main())


async def submit(state: MasterState, slots: int, task_type: str = "COMMAND") -> Any:
    spec = TaskSpec(task_type, 1, "test", None, slots, 42, ["true"])
    return await submit_task(state, spec)


async def exit_on(state: MasterState, link: FakeLink, agent_id: str, alloc: str, code: int) -> None:
    exited = AllocationExited(allocation_id=alloc, exit_code=code, ended_at=utc_now())
    await state.scheduler.call(AgentReport(agent_id=agent_id, link=link, message=exited))


async def connect(state: MasterState, message: Hello) -> tuple[FakeLink, Any]:
    link = FakeLink()
    answer = await state.scheduler.call(AgentConnected(hello=message, link=link))
    return link, answer


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


def test_queued_work_waits_while_the_big_agent_is_briefly_gone(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        big, _ = await connect(state, hello("big", 4))
        await connect(state, hello("small", 2))
        running = await submit(state, 4)
        queued = await submit(state, 4)
        assert big.started() == [running.allocation_id]
        await scheduler.call(AgentDisconnected(agent_id="big", link=big, reason="gone"))
        assert queued.allocation_id in scheduler.allocations
        assert scheduler.allocations[queued.allocation_id].state == AllocationState.QUEUED
        # Once the wait is over the big agent is forgotten: the queued task can never fit.
        await eventually(lambda: queued.allocation_id not in scheduler.allocations)
        row = await state.db.run(lambda s: s.get_one(models.Allocation, queued.allocation_id))
        assert row.exit_reason.startswith("rejected: requests 4 slots on one agent")

    run(db_url, tmp_path, body)


def test_work_an_agent_never_started_is_queued_again(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        first, _ = await connect(state, hello("first", 1))
        submitted = await submit(state, 1)
        assert first.started() == [submitted.allocation_id]
        await scheduler.call(AgentDisconnected(agent_id="first", link=first, reason="stopping"))
        await eventually(
            lambda: scheduler.allocations[submitted.allocation_id].state == AllocationState.QUEUED
        )
        second, _ = await connect(state, hello("second", 1))
        assert second.started() == [submitted.allocation_id]
        report = AllocationStarted(
            allocation_id=submitted.allocation_id, pid=7, started_at=utc_now()
        )
        await scheduler.call(AgentReport(agent_id="second", link=second, message=report))
        assert scheduler.allocations[submitted.allocation_id].state == AllocationState.RUNNING

    run(db_url, tmp_path, body)


def test_running_work_fails_when_its_agent_does_not_return(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        link, _ = await connect(state, hello("a", 1))
        submitted = await submit(state, 1)
        report = AllocationStarted(
            allocation_id=submitted.allocation_id, pid=7, started_at=utc_now()
        )
        await scheduler.call(AgentReport(agent_id="a", link=link, message=report))
        await scheduler.call(AgentDisconnected(agent_id="a", link=link, reason="network"))
        await eventually(lambda: submitted.allocation_id not in scheduler.allocations)
        row = await state.db.run(lambda s: s.get_one(models.Allocation, submitted.allocation_id))
        assert row.state == AllocationState.TERMINATED.value and row.exit_code is None
        assert row.exit_reason.startswith("agent 'a' lost its connection to the master")

    run(db_url, tmp_path, body)


def test_reconnecting_agent_reattaches_what_it_still_runs(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        link, _ = await connect(state, hello("a", 2))
        kept = await submit(state, 1)
        dropped = await submit(state, 1)
        for allocation_id in (kept.allocation_id, dropped.allocation_id):
            report = AllocationStarted(allocation_id=allocation_id, pid=7, started_at=utc_now())
            await scheduler.call(AgentReport(agent_id="a", link=link, message=report))
        await scheduler.call(AgentDisconnected(agent_id="a", link=link, reason="blip"))
        again, welcome = await connect(state, hello("a", 2, running=(kept.allocation_id,)))
        assert isinstance(welcome, Welcome)
        assert welcome.reattach == [kept.allocation_id]
        assert dropped.allocation_id not in scheduler.allocations
        exited = AllocationExited(allocation_id=kept.allocation_id, exit_code=0, ended_at=utc_now())
        await scheduler.call(AgentReport(agent_id="a", link=again, message=exited))
        assert scheduler.allocations == {}

    run(db_url, tmp_path, body)


def test_work_that_ended_while_the_master_was_away_keeps_its_exit_code(
    db_url: str, tmp_path: Path
) -> None:
    """The agent lists an allocation whose exit still waits in its outbox: the master keeps it
    for that message instead of failing it as lost."""

    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        link, _ = await connect(state, hello("a", 1))
        submitted = await submit(state, 1)
        allocation_id = submitted.allocation_id
        report = AllocationStarted(allocation_id=allocation_id, pid=7, started_at=utc_now())
        await scheduler.call(AgentReport(agent_id="a", link=link, message=report))
        await scheduler.call(AgentDisconnected(agent_id="a", link=link, reason="master away"))
        again, welcome = await connect(
            state, hello("a", 1).model_copy(update={"exited": [allocation_id]})
        )
        assert isinstance(welcome, Welcome) and welcome.reattach == []
        assert allocation_id in scheduler.allocations
        await exit_on(state, again, "a", allocation_id, 0)
        row = await state.db.run(lambda s: s.get_one(models.Allocation, allocation_id))
        assert row.state == AllocationState.TERMINATED.value and row.exit_code == 0

    run(db_url, tmp_path, body)


def test_welcome_goes_out_before_queued_work(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        queued = await submit(state, 1)
        link, _ = await connect(state, hello("late", 1))
        assert [m.type for m in link.sent] == ["welcome", "start_allocation"]
        assert link.started() == [queued.allocation_id]

    run(db_url, tmp_path, body)


def test_stale_link_reports_are_ignored(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        old, _ = await connect(state, hello("a", 1))
        submitted = await submit(state, 1)
        new, _ = await connect(state, hello("a", 1, running=(submitted.allocation_id,)))
        assert old.closed == "replaced by a newer connection of the same agent"
        exited = AllocationExited(
            allocation_id=submitted.allocation_id, exit_code=0, ended_at=utc_now()
        )
        await scheduler.call(AgentReport(agent_id="a", link=old, message=exited))
        assert submitted.allocation_id in scheduler.allocations
        await scheduler.call(AgentDisconnected(agent_id="a", link=old, reason="old socket"))
        assert "a" in scheduler.agents and scheduler.agents["a"].link is new

    run(db_url, tmp_path, body)


def test_agents_of_another_protocol_or_pool_are_rejected(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        _, answer = await connect(state, hello("a", 1, version=99))
        assert isinstance(answer, Reject) and "protocol version 99" in answer.reason
        other = hello("b", 1).model_copy(update={"resource_pool": "gpu"})
        _, answer = await connect(state, other)
        assert isinstance(answer, Reject) and "unknown resource pool 'gpu'" in answer.reason
        assert state.scheduler.agents == {}

    run(db_url, tmp_path, body)


def test_after_a_restart_known_pools_wait_for_their_agents(db_url: str, tmp_path: Path) -> None:
    async def first_run(state: MasterState) -> None:
        await connect(state, hello("big", 4))

    async def second_run(state: MasterState) -> None:
        await connect(state, hello("small", 1))
        submitted = await submit(state, 4)
        assert submitted.rejection is None  # "big" may still come back
        big, _ = await connect(state, hello("big", 4))
        assert big.started() == [submitted.allocation_id]

    run(db_url, tmp_path, first_run)
    run(db_url, tmp_path, second_run)


def test_a_trial_spans_agents_only_when_no_single_agent_has_its_slots(
    db_url: str, tmp_path: Path
) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        small, _ = await connect(state, hello("a", 1))
        big, _ = await connect(state, hello("b", 2))
        whole = await submit(state, 2, "TRIAL")
        assert big.started() == [whole.allocation_id] and small.started() == []
        assert scheduler.agent_slot_counts(whole.allocation_id) == {"b": 2}
        await exit_on(state, big, "b", whole.allocation_id, 0)

        spread = await submit(state, 3, "TRIAL")
        assert small.started() == big.started()[1:] == [spread.allocation_id]
        assert scheduler.agent_slot_counts(spread.allocation_id) == {"a": 1, "b": 2}
        command = await submit(state, 3)  # commands stay on one agent
        assert command.rejection and "on one agent" in command.rejection

    run(db_url, tmp_path, body)


def test_a_spread_allocation_ends_once_every_part_has(db_url: str, tmp_path: Path) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        a, _ = await connect(state, hello("a", 1))
        b, _ = await connect(state, hello("b", 1))
        done = await submit(state, 2, "TRIAL")
        await exit_on(state, b, "b", done.allocation_id, 0)
        assert done.allocation_id in scheduler.allocations  # "a" may still be reporting
        await exit_on(state, a, "a", done.allocation_id, 0)
        assert done.allocation_id not in scheduler.allocations
        row = await state.db.run(lambda s: s.get_one(models.Allocation, done.allocation_id))
        assert (row.exit_code, row.exit_reason) == (0, "exited successfully (exit code 0)")

        # One part fails: the other is killed, and the failure is the allocation's outcome.
        failed = await submit(state, 2, "TRIAL")
        await exit_on(state, b, "b", failed.allocation_id, 3)
        kills = [m for m in a.sent if isinstance(m, KillAllocation)]
        assert [k.allocation_id for k in kills] == [failed.allocation_id]
        assert "part on agent 'b' failed" in kills[0].reason
        assert not any(isinstance(m, KillAllocation) for m in b.sent)
        await exit_on(state, a, "a", failed.allocation_id, 143)
        row = await state.db.run(lambda s: s.get_one(models.Allocation, failed.allocation_id))
        assert (row.exit_code, row.exit_reason) == (3, "exited with code 3")

    run(db_url, tmp_path, body)


def test_an_agent_that_leaves_on_purpose_is_logged_as_information(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An idle agent the autoscaler stopped (drained first, then closed with 1001) is news, not
    a warning; an agent whose link broke is a warning."""

    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        for agent_id, shut_down, drained in (("left", True, False), ("drained", False, True)):
            link, _ = await connect(state, hello(agent_id, 1))
            scheduler.agents[agent_id].draining = drained
            await scheduler.call(
                AgentDisconnected(agent_id=agent_id, link=link, reason="bye", shut_down=shut_down)
            )
        broken, _ = await connect(state, hello("broken", 1))
        await scheduler.call(
            AgentDisconnected(agent_id="broken", link=broken, reason="closed (code 1006)")
        )

    with caplog.at_level(logging.INFO, logger="master.scheduler"):
        run(db_url, tmp_path, body)
    levels = {
        r.args[0]: r.levelname  # type: ignore[index]
        for r in caplog.records
        if r.getMessage().startswith("agent ") and "disconnected" in r.getMessage()
    }
    assert levels == {"left": "INFO", "drained": "INFO", "broken": "WARNING"}


def test_a_task_that_needs_no_slot_goes_to_the_aux_pool(db_url: str, tmp_path: Path) -> None:
    """Determined's ``default_aux_resource_pool``: zero-slot tasks that name no pool go there."""

    async def main() -> None:
        config = load_config(
            None,
            environ={},
            data_dir=str(tmp_path),
            db={"url": db_url},
            resource_pools=[{"pool_name": "gpu"}, {"pool_name": "cpu"}],
            resource_manager={
                "default_compute_resource_pool": "gpu",
                "default_aux_resource_pool": "cpu",
            },
        )
        db = Database(config.database_url)
        migrate(db.engine)
        cluster_id = await db.run(bootstrap)
        logs = LogStore(db)
        scheduler = Scheduler(config, db, logs, utc_now)
        await scheduler.start()
        state = MasterState(config, db, logs, scheduler, cluster_id, "m", utc_now(), "token")
        try:
            aux = await submit_task(state, TaskSpec("COMMAND", 1, "aux", None, 0, 42, ["true"]))
            compute = await submit(state, 1)
            pools = {a.id: a.pool for a in scheduler.allocations.values()}
            assert pools[aux.allocation_id] == "cpu"
            assert pools[compute.allocation_id] == "gpu"
        finally:
            await scheduler.stop()
            db.close()

    asyncio.run(main())
