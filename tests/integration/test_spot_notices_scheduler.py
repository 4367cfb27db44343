"""The scheduler's side of a spot notice, on a real database (SQLite and PostgreSQL) with fake
agent links (the agent's own side is tested against a fake metadata service in
tests/unit/test_agent_spot.py; the whole path with real agents in test_spot_interruptions.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from agent.protocol import AllocationStarted, InterruptionNotice, NoticeKind, StartAllocation
from master import models
from master.config import load_config
from master.scheduler.state import (
    AgentDisconnected,
    AgentNotice,
    AgentReport,
    Allocation,
    Preemption,
)
from master.state import MasterState, utc_now
from tests.integration.test_scheduler_loop import connect, eventually, hello, run, submit


def notice(kind: NoticeKind = NoticeKind.INTERRUPTION, seconds: float = 120) -> InterruptionNotice:
    now = utc_now()
    deadline = now + timedelta(seconds=seconds) if kind is NoticeKind.INTERRUPTION else None
    return InterruptionNotice(
        kind=kind, cloud="aws", deadline=deadline, noticed_at=now, detail="terminate"
    )


async def task_log(state: MasterState, task_id: str) -> list[str]:
    def read(session: object) -> list[str]:
        query = select(models.TaskLog.log).where(models.TaskLog.task_id == task_id)
        return list(session.scalars(query))  # type: ignore[attr-defined]

    return await state.db.run(read)


async def started(state: MasterState, link: object, agent_id: str, allocation_id: str) -> None:
    report = AllocationStarted(allocation_id=allocation_id, pid=7, started_at=utc_now())
    await state.scheduler.call(AgentReport(agent_id=agent_id, link=link, message=report))  # type: ignore[arg-type]


def test_an_interruption_notice_preempts_trials_warns_commands_and_fences_the_agent(
    db_url: str, tmp_path: Path
) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        asked: list[tuple[str, Preemption]] = []

        async def preempt(allocation: Allocation, why: Preemption) -> None:
            asked.append((allocation.id, why))

        scheduler.preempt_hooks["TRIAL"] = preempt
        link, _ = await connect(state, hello("i-1", 2))
        trial = await submit(state, 1, "TRIAL")
        command = await submit(state, 1)
        for allocation_id in (trial.allocation_id, command.allocation_id):
            await started(state, link, "i-1", allocation_id)
        sent = notice()
        await scheduler.call(AgentNotice(agent_id="i-1", link=link, notice=sent))

        assert [a for a, _ in asked] == [trial.allocation_id]
        why = asked[0][1]
        assert why.deadline == sent.deadline
        assert why.reason.startswith("spot interruption notice for i-1, deadline ")
        assert scheduler.allocations[trial.allocation_id].interrupted
        lines = await task_log(state, command.task_id)
        assert any("spot interruption notice for i-1" in line and "stopped then" in line
                   for line in lines)  # fmt: skip
        # Nothing new lands on the agent being reclaimed.
        waiting = await submit(state, 1)
        assert waiting.allocation_id not in link.started()
        other, _ = await connect(state, hello("i-2", 1))
        await eventually(lambda: waiting.allocation_id in other.started())
        # Once it is gone, its tasks end at once: there is no reconnect wait for a reclaimed
        # instance.
        await scheduler.call(AgentDisconnected(agent_id="i-1", link=link, reason="closed"))
        assert command.allocation_id not in scheduler.allocations
        row = await state.db.run(lambda s: s.get_one(models.Allocation, command.allocation_id))
        assert "its instance was reclaimed by AWS" in row.exit_reason

    run(db_url, tmp_path, body)


def test_a_rebalance_recommendation_under_replace_preempts_nothing(
    db_url: str, tmp_path: Path
) -> None:
    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        asked: list[str] = []

        async def preempt(allocation: Allocation, why: Preemption) -> None:
            asked.append(allocation.id)

        scheduler.preempt_hooks["TRIAL"] = preempt
        link, _ = await connect(state, hello("i-1", 2))
        trial = await submit(state, 1, "TRIAL")
        await started(state, link, "i-1", trial.allocation_id)
        await scheduler.call(
            AgentNotice(agent_id="i-1", link=link, notice=notice(NoticeKind.REBALANCE))
        )
        assert asked == [] and not scheduler.allocations[trial.allocation_id].interrupted
        assert scheduler.agents["i-1"].interrupting
        waiting = await submit(state, 1)
        assert waiting.allocation_id not in link.started()
        # A later interruption notice still preempts with its deadline.
        await scheduler.call(AgentNotice(agent_id="i-1", link=link, notice=notice()))
        assert asked == [trial.allocation_id]
        assert [m for m in link.sent if isinstance(m, StartAllocation)][-1].allocation_id == (
            trial.allocation_id
        )

    run(db_url, tmp_path, body)


@pytest.mark.parametrize("policy", ["ignore", "migrate"])
def test_the_pools_rebalance_policy_decides_what_a_recommendation_does(
    db_url: str, tmp_path: Path, policy: str
) -> None:
    """ignore: the agent keeps getting work; migrate: trials are also asked to move now."""

    async def body(state: MasterState) -> None:
        scheduler = state.scheduler
        scheduler.config = load_config(
            None,
            environ={},
            data_dir=str(tmp_path),
            db={"url": db_url},
            resource_pools=[
                {"pool_name": "default", "provider": {"type": "local", "rebalance": policy}}
            ],
        )
        asked: list[tuple[str, Preemption]] = []

        async def preempt(allocation: Allocation, why: Preemption) -> None:
            asked.append((allocation.id, why))

        scheduler.preempt_hooks["TRIAL"] = preempt
        link, _ = await connect(state, hello("i-1", 2))
        trial = await submit(state, 1, "TRIAL")
        await started(state, link, "i-1", trial.allocation_id)
        heard: list[str] = []
        scheduler.notice_hooks.append(lambda pool, agent, notice: heard.append(agent.id))
        await scheduler.call(
            AgentNotice(agent_id="i-1", link=link, notice=notice(NoticeKind.REBALANCE))
        )
        assert heard == ["i-1"]
        later = await submit(state, 1)
        if policy == "ignore":
            assert asked == [] and not scheduler.agents["i-1"].interrupting
            assert later.allocation_id in link.started()
        else:
            assert [a for a, _ in asked] == [trial.allocation_id]
            assert asked[0][1].deadline is None
            assert asked[0][1].reason.startswith("rebalance recommendation for i-1")
            assert later.allocation_id not in link.started()

    run(db_url, tmp_path, body)
