"""Figures about the scheduler's passes and the master's event loop, for ``/debug/scheduler``.

A pass is what the scheduler does with one batch of events: handle them, fit, then store its
writes in one transaction and send what it has to send. Two times are kept per pass:

- ``pass``: the time the pass held the event loop (handling its events and fitting), in which
  no HTTP handler or agent socket runs;
- ``flush``: the wall time of its transaction on the scheduler's database thread (the loop is
  free meanwhile, but the pass's replies wait for it).

Event-loop lag is how late a task that sleeps ``LAG_INTERVAL`` wakes up: whatever kept the loop
busy (a pass, a handler serializing a big reply) delays every other coroutine by as much.
Percentiles are over the last ``WINDOW`` samples of each kind.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

WINDOW = 2000  # samples kept per figure (passes, and lag probes: ~3 min at LAG_INTERVAL)
LAG_INTERVAL = 0.1  # seconds between event-loop lag probes


def percentile_ms(samples: deque[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (seconds) in milliseconds, 0 when there are none."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 2)


class SchedulerStats:
    def __init__(self) -> None:
        self.passes = 0
        self.events = 0
        self.pass_seconds: deque[float] = deque(maxlen=WINDOW)
        self.flush_seconds: deque[float] = deque(maxlen=WINDOW)
        self.events_per_pass: deque[int] = deque(maxlen=WINDOW)
        self.lag_seconds: deque[float] = deque(maxlen=WINDOW)

    def record_pass(self, events: int, held: float, flush: float) -> None:
        self.passes += 1
        self.events += events
        self.events_per_pass.append(events)
        self.pass_seconds.append(held)
        self.flush_seconds.append(flush)

    async def watch_lag(self) -> None:
        """Probe the event loop's lag forever (a task the scheduler starts and cancels)."""
        while True:
            began = time.perf_counter()
            await asyncio.sleep(LAG_INTERVAL)
            self.lag_seconds.append(max(0.0, time.perf_counter() - began - LAG_INTERVAL))
