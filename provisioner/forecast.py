"""The predicted warm pool (``max_warm_cost_per_hour``): how many slots of work are expected to
arrive within one boot time from now, so that idle capacity for them is kept or launched.

The forecast is the mean of two arrival rates, times the boot window: the last ``RECENT`` (the
pool's current pace) and, once the pool has a week of history, the same hour of last week
(Monday-morning rushes come back). It is an expected value: bursts bigger than it still boot
(with ``boot_hedge``, racing). Warm slots are ``round(forecast)``; the decider keeps idle
agents for them (newest idle first) and launches the rest, within the hourly cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from provisioner.types import PoolHistory

RECENT = timedelta(minutes=30)


@dataclass(frozen=True)
class Forecast:
    slots: int  # warm slots wanted
    start: datetime
    end: datetime

    def reason(self) -> str:
        """e.g. ``warm: 2 slots forecast for 14:00–14:04``."""
        unit = "slot" if self.slots == 1 else "slots"
        return f"warm: {self.slots} {unit} forecast for {_hm(self.start)}–{_hm(self.end)}"


def forecast(history: PoolHistory, now: datetime, boot_s: float) -> Forecast:
    rates = []
    since = history.since
    if since is not None and since <= now - RECENT:
        recent = sum(slots for at, slots in history.arrivals if now - RECENT <= at <= now)
        rates.append(recent / RECENT.total_seconds())
    if history.same_hour_last_week is not None:
        rates.append(history.same_hour_last_week / 3600)
    expected = sum(rates) / len(rates) * boot_s if rates else 0.0
    return Forecast(round(expected), now, now + timedelta(seconds=boot_s))


def _hm(at: datetime) -> str:
    return at.strftime("%H:%M")
