"""How the launchers of a trial spread over several agents find each other.

A trial whose ``slots_per_trial`` no single agent can hold runs on several agents; each agent
starts ``python -m harness.launch`` with only its own slots. Before starting workers, every
launcher must know the whole group: how many workers there are, which global ranks are its own,
and where rank 0 listens (``MASTER_ADDR``/``MASTER_PORT``). The master is the one place they all
reach, so each launcher posts ``POST /api/v1/allocations/{id}/rendezvous`` with its agent id,
address, slot count and a port free on its address, and repeats until the answer is ``ready``:
once every agent of the allocation has posted.

Members are ordered by agent id, so every launcher computes the same ranks; the first member is
the chief, whose address and port everyone uses. The state lives in memory only and is dropped
when the allocation ends (a scheduler exit hook): after a master restart the launchers still
waiting post again, and a trial that cannot complete its rendezvous fails and restarts from its
checkpoint like any other failed run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from master.scheduler.state import Allocation


class RendezvousError(Exception):
    """A post the master refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Arrival:
    """What one agent's launcher posted."""

    agent_id: str
    address: str
    slots: int
    port: int | None = None


@dataclass(frozen=True)
class Member:
    agent_id: str
    address: str
    slots: int
    rank_offset: int  # the global rank of this agent's local rank 0


@dataclass(frozen=True)
class View:
    """The answer to a post: the group so far, complete once ``ready``."""

    ready: bool
    members: tuple[Member, ...]
    missing: tuple[str, ...]  # agents of the allocation that have not posted yet
    master_addr: str | None
    master_port: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "members": [
                {
                    "agentId": m.agent_id,
                    "address": m.address,
                    "slots": m.slots,
                    "rankOffset": m.rank_offset,
                }
                for m in self.members
            ],
            "missing": list(self.missing),
            "masterAddr": self.master_addr,
            "masterPort": self.master_port,
        }


def group_view(expected: Mapping[str, int], arrivals: Mapping[str, Arrival]) -> View:
    """The group of ``arrivals`` among the agents ``expected`` (agent id → slot count)."""
    members: list[Member] = []
    offset = 0
    for agent_id in sorted(arrivals):
        arrival = arrivals[agent_id]
        members.append(Member(agent_id, arrival.address, arrival.slots, offset))
        offset += arrival.slots
    missing = tuple(sorted(set(expected) - set(arrivals)))
    ready = not missing
    chief = arrivals[members[0].agent_id] if ready and members else None
    return View(
        ready=ready,
        members=tuple(members),
        missing=missing,
        master_addr=chief.address if chief else None,
        master_port=chief.port if chief else None,
    )


class Rendezvous:
    """Every multi-agent allocation's arrivals, and the launchers waiting for the rest.

    ``expected_of(allocation_id)`` gives the allocation's agents and their slot counts, or None
    for an allocation that is not running (the scheduler's memory, read on the event loop).
    """

    def __init__(self, expected_of: Callable[[str], Mapping[str, int] | None]) -> None:
        self._expected_of = expected_of
        self._arrivals: dict[str, dict[str, Arrival]] = {}
        self._complete: dict[str, asyncio.Event] = {}

    def arrive(self, allocation_id: str, arrival: Arrival) -> View:
        """Record ``arrival`` (a repeated post replaces the agent's earlier one)."""
        expected = self._expected(allocation_id)
        slots = expected.get(arrival.agent_id)
        if slots is None:
            raise RendezvousError(
                400,
                f"agent '{arrival.agent_id}' holds no slots of allocation {allocation_id} "
                f"(its agents: {', '.join(sorted(expected))})",
            )
        if arrival.slots != slots:
            raise RendezvousError(
                400,
                f"agent '{arrival.agent_id}' holds {slots} slot(s) of allocation "
                f"{allocation_id}, not {arrival.slots}",
            )
        arrivals = self._arrivals.setdefault(allocation_id, {})
        arrivals[arrival.agent_id] = arrival
        view = group_view(expected, arrivals)
        if view.ready:
            self._event(allocation_id).set()
        return view

    async def wait(self, allocation_id: str, timeout: float) -> View:
        """The group once complete, or as it stands after ``timeout`` seconds."""
        if timeout > 0 and not self.view(allocation_id).ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event(allocation_id).wait(), timeout)
        return self.view(allocation_id)

    def view(self, allocation_id: str) -> View:
        return group_view(self._expected(allocation_id), self._arrivals.get(allocation_id, {}))

    def forget(self, allocation_id: str) -> None:
        """The allocation ended: drop its arrivals and release anyone still waiting."""
        self._arrivals.pop(allocation_id, None)
        event = self._complete.pop(allocation_id, None)
        if event is not None:
            event.set()

    async def allocation_ended(self, allocation: Allocation, *_: object) -> None:
        """The scheduler's exit hook."""
        self.forget(allocation.id)

    def _expected(self, allocation_id: str) -> Mapping[str, int]:
        expected = self._expected_of(allocation_id)
        if expected is None:
            raise RendezvousError(404, f"allocation {allocation_id} is not running")
        return expected

    def _event(self, allocation_id: str) -> asyncio.Event:
        return self._complete.setdefault(allocation_id, asyncio.Event())
