"""Break-even idle (``max_idle_agent_period: auto``): how long an idle agent is worth keeping.

Keeping an idle instance costs its price for as long as it is kept. Terminating it costs, when
work comes that it would have taken, a new boot: the boot time billed at the same price, plus
the boot time that the work waits, valued at the same price (``WAIT_VALUE``: a slot-second of
waiting work is worth what a slot-second of the instance costs). So a boot costs ``B = (1 +
WAIT_VALUE) × price × boot``, and both sides scale with the price: the rule is in seconds.

This is ski rental. With no history, keep for ``B / price`` (= 2 × the boot time): whatever the
arrivals, that never costs more than twice the best choice in hindsight. With history, keep for
the period ``T`` that minimises the expected cost over the pool's recent past,

    E[min(G, T)] + P(G > T) × B / price,

where ``G`` is how long an idle agent waited for work. Which agent is reused first depends on
how many slots are idle: the agent ranked ``R`` slots deep (newest idle first) is reused when
``R`` more slots of demand arrive. ``G`` is read from the arrivals of the last ``WINDOW``: from
every ``STEP`` in it, the time until ``R`` slots arrived (not within ``HORIZON``: never).
It assumes the near future looks like the last two hours, and ignores slots freed by work
finishing (which makes it keep a little longer than needed).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from provisioner.types import PoolHistory

WAIT_VALUE = 1.0  # a waiting slot-second is worth this × the instance's price per slot-second
WINDOW = timedelta(hours=2)  # arrivals looked at
HORIZON = timedelta(minutes=30)  # the longest an idle agent is kept
MIN_SAMPLES = 30  # sample points needed before the history is used
STEP = timedelta(minutes=1)  # one sample of "an agent goes idle now" per step
DEFAULT_BOOT_S = 120.0  # before any instance has booted
BOOTS_USED = 20  # the most recent boots averaged


@dataclass
class BreakEven:
    """Keep periods for one pass (computed once per rank)."""

    history: PoolHistory
    now: datetime
    _times: list[float] = field(default_factory=list)  # arrival timestamps (the whole history)
    _cumulative: list[int] = field(default_factory=list)  # slots arrived up to each
    _samples: list[tuple[float, int, int]] = field(default_factory=list)  # (at, first, before)
    _end: int = 0  # arrivals after now are not looked at
    _cache: dict[int, timedelta] = field(default_factory=dict)
    _span: float = 0.0  # seconds of sample points (the window less the horizon)
    _zero_from: int | None = None  # the shallowest rank found not worth keeping

    def __post_init__(self) -> None:
        since = self.history.since or self.now
        start = max(self.now - WINDOW, since)
        self._span = (self.now - start - HORIZON).total_seconds()
        self._times, self._cumulative = _timeline(self.history.arrivals)
        self._end = bisect.bisect_right(self._times, self.now.timestamp())
        step = STEP.total_seconds()
        for n in range(int(self._span // step) + 1 if self._span >= 0 else 0):
            at = start.timestamp() + n * step
            first = bisect.bisect_right(self._times, at, hi=self._end)
            self._samples.append((at, first, self._cumulative[first - 1] if first else 0))

    @property
    def boot_s(self) -> float:
        boots = self.history.boot_seconds[-BOOTS_USED:]
        return sum(boots) / len(boots) if boots else DEFAULT_BOOT_S

    @property
    def boot_cost_s(self) -> float:
        """A boot's cost in seconds of the instance's price."""
        return (1 + WAIT_VALUE) * self.boot_s

    @property
    def learned(self) -> bool:
        """Whether the history covers the window (else the ski-rental period is used)."""
        return self._span >= MIN_SAMPLES * STEP.total_seconds()

    def keep(self, rank_slots: int) -> timedelta:
        """How long an agent ranked ``rank_slots`` deep among the idle ones is kept.

        Deeper ranks wait longer at every sample point, so once a rank is not worth keeping at
        all, no deeper one is: that answer is reused without sampling again."""
        rank = max(1, rank_slots)
        if rank not in self._cache:
            if self._zero_from is not None and rank >= self._zero_from:
                return timedelta(0)
            self._cache[rank] = self._keep(rank)
            if not self._cache[rank] and (self._zero_from is None or rank < self._zero_from):
                self._zero_from = rank
        return self._cache[rank]

    def _keep(self, rank: int) -> timedelta:
        boot = self.boot_cost_s
        if not self.learned:
            return timedelta(seconds=min(boot, HORIZON.total_seconds()))
        horizon = HORIZON.total_seconds()
        found, never = self._gaps(rank)
        gaps = sorted(found)
        samples = len(gaps) + never
        # T = 0: every sample needs a boot.
        best_t, best = 0.0, boot
        waited = 0.0
        for k, gap in enumerate(gaps, 1):
            waited += gap
            later = samples - k
            cost = (waited + later * gap) / samples + later / samples * boot
            if cost < best - 1e-9:
                best_t, best = gap, cost
        cost = (waited + never * horizon) / samples + never / samples * boot
        if cost < best - 1e-9:
            best_t = horizon
        return timedelta(seconds=round(best_t))

    def _gaps(self, rank: int) -> tuple[list[float], int]:
        """From each sample point, seconds until ``rank`` slots arrived (within HORIZON)."""
        horizon = HORIZON.total_seconds()
        times, cumulative, end = self._times, self._cumulative, self._end
        gaps = []
        never = 0
        for at, first, before in self._samples:
            reached = bisect.bisect_left(cumulative, before + rank, first, end)
            if reached < end and times[reached] - at <= horizon:
                gaps.append(times[reached] - at)
            else:
                never += 1
        return gaps, never


# Arrivals as timestamps and running slot totals, per history tuple: the loop hands the same
# tuple to every pass until something arrives, so each is converted once (a memo, not state:
# the answer depends on the tuple alone).
_TIMELINES: dict[int, tuple[tuple[tuple[datetime, int], ...], list[float], list[int]]] = {}
_TIMELINES_KEPT = 16


def _timeline(arrivals: tuple[tuple[datetime, int], ...]) -> tuple[list[float], list[int]]:
    hit = _TIMELINES.get(id(arrivals))
    if hit is not None and hit[0] is arrivals:
        return hit[1], hit[2]
    times = [at.timestamp() for at, _ in arrivals]
    cumulative = list(itertools.accumulate(slots for _, slots in arrivals))
    if len(_TIMELINES) >= _TIMELINES_KEPT:
        del _TIMELINES[next(iter(_TIMELINES))]
    _TIMELINES[id(arrivals)] = (arrivals, times, cumulative)
    return times, cumulative
