"""A spot interruption, step by step, on its pool's timeline (the instance events table).

The scheduler handles a notice (``scheduler.agent_events``: no new work on the agent, its
trials preempted with the notice's deadline) and the provisioner launches the replacement; this
module wakes the pool's loop at once and records what happened, each with its reason:

    interruption_notice  spot interruption notice for i-…, deadline 12:04:10 UTC: …
    requested            …: 1 slot pending for job <task> on reclaimed i-…; no idle capacity
    checkpointed         trial 7 checkpointed and exited 14.2 s after the notice
    resumed              trial 7 resumed on i-… 41.0 s after the notice on i-…

Hooks run on the scheduler's loop and must not wait: database writes go to background tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from agent.protocol import InterruptionNotice, NoticeKind
from master.scheduler.agent_events import describe_notice
from master.scheduler.loop import Scheduler
from master.scheduler.state import Allocation, ConnectedAgent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Interrupted:
    pool: str
    agent_id: str
    noticed_at: datetime


class SpotTimeline:
    """Records the steps of every spot interruption and wakes the pools' loops for them.

    ``record(pool, instance_id, kind, reason)`` writes one event (``MasterWorld.event``);
    ``wake(pool)`` runs the pool's provisioning pass now."""

    def __init__(
        self,
        scheduler: Scheduler,
        record: Callable[[str, str | None, str, str], Awaitable[None]],
        wake: Callable[[str], None],
    ) -> None:
        self.scheduler = scheduler
        self.record = record
        self.wake = wake
        self.noticed: dict[str, _Interrupted] = {}  # agent id → its notice
        self.resuming: dict[str, _Interrupted] = {}  # trial id → the notice it moved for
        self._writes: set[asyncio.Task[None]] = set()
        scheduler.notice_hooks.append(self.on_notice)
        scheduler.exit_hooks.append(self.on_exit)
        scheduler.launch_hooks.append(self.on_launch)

    def on_notice(self, pool: str, agent: ConnectedAgent, notice: InterruptionNotice) -> None:
        kind = "interruption_notice" if notice.kind is NoticeKind.INTERRUPTION else "rebalance"
        if agent.notice is notice:  # acted on (not a rebalance the pool ignores)
            self.noticed[agent.id] = _Interrupted(pool, agent.id, self.scheduler.clock())
            self.wake(pool)
        self._write(pool, agent.id, kind, describe_notice(agent.id, notice))

    async def on_exit(self, allocation: Allocation, exit_code: int | None, reason: str) -> None:
        for agent_id in allocation.agent_slots:
            notice = self.noticed.get(agent_id)
            if notice is None:
                continue
            after = (self.scheduler.clock() - notice.noticed_at).total_seconds()
            trial = allocation.env.get("DET_TRIAL_ID")
            who = f"trial {trial}" if trial else f"task {allocation.task_id}"
            if trial and allocation.preempting and exit_code == 0:
                self.resuming[trial] = notice
                text = f"{who} checkpointed and exited {after:.1f} s after the notice"
                self._write(notice.pool, agent_id, "checkpointed", text)
            else:
                if trial:
                    self.resuming[trial] = notice
                text = f"{who} ended {after:.1f} s after the notice: {reason}"
                self._write(notice.pool, agent_id, "task_ended", text)
            return

    def on_launch(self, allocation: Allocation) -> None:
        trial = allocation.env.get("DET_TRIAL_ID")
        notice = self.resuming.pop(trial, None) if trial else None
        if notice is None:
            return
        after = (self.scheduler.clock() - notice.noticed_at).total_seconds()
        where = ", ".join(allocation.agent_slots)
        text = (
            f"trial {trial} resumed on {where} {after:.1f} s after the notice on {notice.agent_id}"
        )
        self._write(notice.pool, next(iter(allocation.agent_slots)), "resumed", text)

    def _write(self, pool: str, instance_id: str | None, kind: str, reason: str) -> None:
        async def write() -> None:
            try:
                await self.record(pool, instance_id, kind, reason)
            except Exception:
                log.exception("could not record the %s event of pool %s", kind, pool)

        task = asyncio.create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
