"""Kill interactive tasks nobody uses, so their slots (and the instances under them) go free.

Activity is proxied traffic (``ProxyHub.touch``), an open shell tunnel (an SSH session) for as
long as it is open, and for notebooks a kernel that is busy or was active recently — Jupyter's
``/api/kernels`` knows, and the watcher asks it only when a notebook looks idle. The timeout of
each task was resolved when it was launched (``idle_timeout`` in its stored config).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

import httpx
from sqlalchemy.orm import Session

from harness.units import format_duration
from master import models
from master.api.services import NOTEBOOK, idle_timeout_of
from master.proxy import ProxyHub, upstream_headers
from master.scheduler.state import Allocation, KillTask
from master.state import MasterState

log = logging.getLogger(__name__)
CHECK_INTERVAL_SECONDS = 1.0
KERNEL_QUERY_SECONDS = 5.0


class IdleWatcher:
    def __init__(self, state: MasterState, hub: ProxyHub) -> None:
        self.state = state
        self.hub = hub
        self._timeouts: dict[str, timedelta | None] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="idle-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                log.exception("idle check failed")
            await asyncio.sleep(CHECK_INTERVAL_SECONDS)

    async def check(self) -> None:
        now = self.state.clock()
        live = {a.task_id for a in self.state.scheduler.allocations.values()}
        self._timeouts = {k: v for k, v in self._timeouts.items() if k in live}
        for allocation in list(self.state.scheduler.allocations.values()):
            if not allocation.service or not allocation.is_ready or allocation.kill_reason:
                continue
            timeout = await self._timeout(allocation.task_id)
            if timeout is None:
                continue
            task_id = allocation.task_id
            if self.hub.has_open_tunnel(task_id):
                self.hub.touch(task_id)
                continue
            last = self.hub.last_activity.setdefault(task_id, now)
            if now - last < timeout:
                continue
            if allocation.task_type == NOTEBOOK.task_type:
                kernel_activity = await self._kernel_activity(allocation, now)
                if kernel_activity is not None and now - kernel_activity < timeout:
                    self.hub.last_activity[task_id] = kernel_activity
                    continue
            idle = format_duration(timedelta(seconds=round((now - last).total_seconds())))
            reason = (
                f"idle for {idle} (idle timeout {format_duration(timeout)}): no proxied "
                "traffic, SSH session or busy kernel; killed to free its slots"
            )
            log.info("task %s %s", task_id, reason)
            await self.state.scheduler.call(KillTask(task_id=task_id, reason=reason))

    async def _timeout(self, task_id: str) -> timedelta | None:
        if task_id not in self._timeouts:

            def read(session: Session) -> timedelta | None:
                task = session.get(models.Task, task_id)
                return idle_timeout_of(task) if task is not None else None

            self._timeouts[task_id] = await self.state.db.run(read)
        return self._timeouts[task_id]

    async def _kernel_activity(self, allocation: Allocation, now: datetime) -> datetime | None:
        """``now`` if a kernel is busy, else the latest kernel activity Jupyter reports."""
        url = f"http://{allocation.proxy_address}/proxy/{allocation.task_id}/api/kernels"
        headers = await upstream_headers(self.state, self.hub, allocation.task_id)
        try:
            response = await self.hub.http.get(url, headers=headers, timeout=KERNEL_QUERY_SECONDS)
            response.raise_for_status()
            kernels = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("could not ask notebook %s about its kernels: %s", allocation.task_id, exc)
            return None
        latest: datetime | None = None
        for kernel in kernels:
            if kernel.get("execution_state") == "busy":
                return now
            with contextlib.suppress(TypeError, ValueError):
                seen = datetime.fromisoformat(kernel["last_activity"].replace("Z", "+00:00"))
                latest = seen if latest is None else max(latest, seen)
        return latest
