"""The bounded memory behind ``PoolSnapshot.history``: recent arrivals and boot times.

The provisioning loop seeds it from the master's database when it starts (``seed``), then it
and the simulator tell it what they see each pass; ``history(now)``
gives the decider the last ``idle_policy.WINDOW`` of arrivals and the last ``BOOTS_USED`` boot
times. Both are capped (``MAX_ARRIVALS``), so a pass stays cheap however busy the pool is.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from provisioner.idle_policy import BOOTS_USED, WINDOW
from provisioner.types import AgentInfo, Demand, Instance, PoolHistory

MAX_ARRIVALS = 4096  # arrivals kept at most (a 2 h window rarely holds more than a few hundred)
MAX_SEEN = 8192  # job and instance ids remembered, to count each arrival and boot once
WEEK = timedelta(days=7)
HOURS_KEPT = 8 * 24  # slots per hour for a little over a week, for the warm pool's forecast


@dataclass(frozen=True)
class HistorySeed:
    arrivals: tuple[tuple[str, datetime, int], ...] = ()
    boot_seconds: tuple[float, ...] = ()
    since: datetime | None = None


class HistoryRecorder:
    def __init__(self, since: datetime) -> None:
        self.since = since
        self._arrivals: deque[tuple[datetime, int]] = deque(maxlen=MAX_ARRIVALS)
        self._boots: deque[float] = deque(maxlen=BOOTS_USED)
        self._jobs: dict[str, None] = {}
        self._joined: dict[str, None] = {}
        self._cached: tuple[int, PoolHistory] | None = None
        self._hourly: dict[int, int] = {}  # hours since the epoch → slots that arrived

    def seed(self, seed: HistorySeed) -> None:
        """What the database remembers from before this loop started (``PoolWorld.history``):
        arrivals (job id, when, slots) oldest first, boot times, and since when the pool has
        records. Jobs seeded here are not counted again when the loop sees them pending."""
        for job_id, at, slots in seed.arrivals:
            self._remember(self._jobs, job_id)
            self.arrived(at, slots)
        for seconds in seed.boot_seconds:
            self.booted(seconds)
        if seed.since is not None and seed.since < self.since:
            self.since = seed.since
        self._cached = None

    def arrived(self, at: datetime, slots: int) -> None:
        self._arrivals.append((at, slots))
        hour = _hour(at)
        self._hourly[hour] = self._hourly.get(hour, 0) + slots
        if len(self._hourly) > HOURS_KEPT:
            del self._hourly[min(self._hourly)]
        self._cached = None

    def booted(self, seconds: float) -> None:
        self._boots.append(max(0.0, seconds))
        self._cached = None

    def observe(
        self,
        now: datetime,
        demand: list[Demand] | tuple[Demand, ...],
        instances: list[Instance] | tuple[Instance, ...],
        agents: list[AgentInfo] | tuple[AgentInfo, ...],
    ) -> None:
        """One pass's view: demand not seen before arrived now; an instance whose agent joined
        since the last pass booted in ``now - launched_at``."""
        for item in demand:
            if item.job_id not in self._jobs:
                self._remember(self._jobs, item.job_id)
                self.arrived(now, item.slots)
        by_instance = {a.instance_id for a in agents if a.instance_id}
        by_agent = {a.agent_id for a in agents}
        for instance in instances:
            if instance.id in self._joined:
                continue
            if instance.id in by_instance or (instance.agent_id and instance.agent_id in by_agent):
                self._remember(self._joined, instance.id)
                self.booted((now - instance.launched_at).total_seconds())

    def history(self, now: datetime) -> PoolHistory:
        start = now - WINDOW
        while self._arrivals and self._arrivals[0][0] < start:
            self._arrivals.popleft()
            self._cached = None
        hour = _hour(now - WEEK)
        if self._cached is None or self._cached[0] != hour:
            watched = now - WEEK >= self.since
            history = PoolHistory(
                tuple(self._arrivals),
                tuple(self._boots),
                self.since,
                self._hourly.get(hour, 0) if watched else None,
            )
            self._cached = (hour, history)
        return self._cached[1]

    @staticmethod
    def _remember(seen: dict[str, None], key: str) -> None:
        seen[key] = None
        if len(seen) > MAX_SEEN:
            del seen[next(iter(seen))]


def _hour(at: datetime) -> int:
    return int(at.timestamp() // 3600)
