"""What the scheduler holds in memory, and the events that change it.

Only the scheduler's loop mutates these objects; everything else sends it an event. Code on the
event-loop thread (async handlers) may read them between events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from agent.protocol import (
    AllocationExited,
    AllocationStarted,
    Hello,
    InterruptionNotice,
    MasterMessage,
    SlotInfo,
)


class AllocationState(StrEnum):
    """Determined's task states (``taskv1State``), as the REST API spells them.

    STARTING: placed on agents and sent to them, not yet reported running.
    """

    QUEUED = "STATE_QUEUED"
    STARTING = "STATE_STARTING"
    RUNNING = "STATE_RUNNING"
    TERMINATING = "STATE_TERMINATING"
    TERMINATED = "STATE_TERMINATED"


ACTIVE_STATES = (
    AllocationState.QUEUED,
    AllocationState.STARTING,
    AllocationState.RUNNING,
    AllocationState.TERMINATING,
)


class AgentLink(Protocol):
    """One agent's live connection; ``send`` raises ConnectionError once it is closed."""

    async def send(self, message: MasterMessage) -> None: ...

    async def close(self, reason: str) -> None: ...


def link_peer_host(link: AgentLink) -> str | None:
    """The remote address of the agent's WebSocket (``master.agent_link.WebSocketLink`` keeps
    its Starlette socket as ``websocket``); None for links without one (test doubles)."""
    client = getattr(getattr(link, "websocket", None), "client", None)
    host = getattr(client, "host", None)
    return host if isinstance(host, str) and host else None


@dataclass
class ConnectedAgent:
    id: str
    pool: str
    slots: list[SlotInfo]
    link: AgentLink
    version: str
    addresses: list[str]
    registered_at: datetime
    connected_at: datetime
    enabled: bool = True
    draining: bool = False
    idle_since: datetime | None = None  # None while it runs an allocation
    isolation: str = "none"  # "uid": each task runs as its own uid (agent/isolation.py)
    # The agent's address as its WebSocket connection shows it (None when the link has none):
    # where the proxy reaches its tasks' services, never an address a task reported.
    peer_host: str | None = None
    # Slots an admin disabled (det slot disable): nothing new is placed on them.
    disabled_slots: set[int] = field(default_factory=set)
    # The cloud announced it reclaims this agent's instance (spot interruption notice), or
    # recommends moving off it (rebalance, under pool policy replace or migrate): nothing new
    # is placed here, and the provisioner counts the instance as gone.
    notice: InterruptionNotice | None = None

    @property
    def interrupting(self) -> bool:
        return self.notice is not None


@dataclass(frozen=True)
class LostAgent:
    """An agent that disconnected at ``since``; ``slots`` is 0 when unknown (master restart)."""

    pool: str
    slots: int
    since: datetime


@dataclass
class Allocation:
    id: str
    task_id: str
    task_type: str
    owner: str
    pool: str
    slots: int
    priority: int
    submitted_at: datetime
    argv: list[str]
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    bind_mounts: list[dict[str, str]] = field(default_factory=list)
    state: AllocationState = AllocationState.QUEUED
    # The owner's user id (None where the builder did not know it: read when needed).
    owner_id: int | None = None
    agent_slots: dict[str, list[int]] = field(default_factory=dict)
    started_at: datetime | None = None
    kill_reason: str | None = None
    waiting_reason: str | None = None
    single_agent: bool = True
    # Agents whose part of the allocation has exited, with its exit code; an allocation spread
    # over several agents ends once every part has, with ``outcome`` (the first failure's exit
    # code and reason, else the last part's).
    exited: dict[str, int | None] = field(default_factory=dict)
    outcome: tuple[int | None, str] | None = None
    preemptible: bool = False
    preempting: bool = False
    # Its instance is being (or was) reclaimed by the cloud — a spot notice, or the machine
    # gone: however it ends, that is an interruption, never a failure of its own (a trial
    # runs again from its checkpoint without spending max_restarts).
    interrupted: bool = False
    # Interactive tasks (shells, notebooks, TensorBoards) are ready only once their service
    # reported where it listens; everything else is ready as soon as it runs.
    service: bool = False
    service_ready: bool = False
    proxy_address: str | None = None

    @property
    def is_ready(self) -> bool:
        running = self.state == AllocationState.RUNNING
        return running and (self.service_ready or not self.service)


class SchedulerError(Exception):
    """An event the scheduler refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---- events ---------------------------------------------------------------------------------


@dataclass
class Event:
    reply: asyncio.Future[Any] | None = field(default=None, kw_only=True)


# A row to insert: its model and its column values.
Row = tuple[type[Any], dict[str, Any]]


@dataclass
class AllocationSubmitted(Event):
    """A task's allocation, submitted: ``allocation`` is the scheduler's view of it, ``rows``
    the rows (model, column values: its task's, then its own) that the pass taking it stores,
    in its transaction, before anything else of that pass."""

    allocation_id: str
    allocation: Allocation
    rows: list[Row] = field(default_factory=list)


@dataclass
class AllocationReady(Event):
    """The task reported that its service answers on ``proxy_port`` of its agent (None: it
    serves nothing to proxy). Accepted once per allocation; the host is the agent's own."""

    allocation_id: str
    proxy_port: int | None


@dataclass
class KillTask(Event):
    task_id: str
    reason: str


@dataclass
class AgentConnected(Event):
    """A hello. ``last_seq`` is the last message the master applied from this agent process
    (for the welcome); ``restarted``: the master knew an earlier process of this agent, so
    whatever that one ran is gone (see ``master/agent_sequences.py``)."""

    hello: Hello
    link: AgentLink
    last_seq: int = 0
    restarted: bool = False


@dataclass
class AgentDisconnected(Event):
    agent_id: str
    link: AgentLink
    reason: str
    shut_down: bool = False  # the agent closed normally (1000/1001), e.g. stopped when idle


@dataclass
class AgentReport(Event):
    agent_id: str
    link: AgentLink
    message: AllocationStarted | AllocationExited


@dataclass
class AgentInterrupted(Event):
    """The cloud took back the instance under ``agent_id`` (``reason``, e.g. "preempted by
    GCP"): whatever ran there ended now, as an interruption, whether or not the agent is still
    connected."""

    agent_id: str
    reason: str


@dataclass
class SetAgentState(Event):
    agent_id: str
    enabled: bool
    drain: bool = False


@dataclass
class SetSlotState(Event):
    """Determined's slot enable/disable: one slot of an agent; ``drain`` lets what runs there
    finish, otherwise it is killed."""

    agent_id: str
    slot_id: int
    enabled: bool
    drain: bool = False


@dataclass
class Reschedule(Event):
    """Nothing changed in the scheduler's state, but something it reports did (a pool's
    provisioning status): run a pass so waiting tasks say why they wait, as of now."""


@dataclass
class AgentNotice(Event):
    """The agent's metadata service announced a spot interruption or rebalance; ``link`` None:
    the cluster-side signal (``master/spot_queue.py``) said so about the agent's instance."""

    agent_id: str
    link: AgentLink | None
    notice: InterruptionNotice


@dataclass
class ReconnectDeadline(Event):
    agent_id: str
    since: datetime


ExitHook = Callable[[Allocation, int | None, str], Awaitable[None]]
DemandHook = Callable[[str], None]  # called with a pool whose pending demand may have changed


@dataclass(frozen=True)
class Preemption:
    """Why the scheduler asks a task to checkpoint and exit, and by when it must be gone
    (None: no deadline of the scheduler's own)."""

    reason: str
    deadline: datetime | None = None


PreemptHook = Callable[[Allocation, Preemption], Awaitable[None]]
# Called with an allocation the scheduler just sent to its agents.
LaunchHook = Callable[[Allocation], None]
# Called with the agent's pool, the agent and the notice, once the scheduler handled it.
NoticeHook = Callable[[str, ConnectedAgent, InterruptionNotice], None]
