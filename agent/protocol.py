"""The wire protocol between an agent and the master.

One WebSocket per agent, opened by the agent to ``/agents/ws`` with the cluster join token as
``Authorization: Bearer <token>``. Every frame is one JSON object with a ``type`` field naming the
message; both sides parse frames with :data:`AgentMessageAdapter` / :data:`MasterMessageAdapter`
so an unknown or malformed message is rejected with a pydantic error, never half-applied.

Order of a connection:

1. agent → ``hello``: who it is, its slots, and the allocations it is still running (after a
   master restart or a network blip these are re-attached instead of failed).
2. master → ``welcome``: liveness options and which of the reported allocations to keep; the
   agent kills every running allocation the master does not list. Or ``reject`` (unknown pool)
   and the master closes the socket.
3. Then any order: ``start_allocation`` / ``kill_allocation`` from the master;
   ``allocation_started``, ``allocation_exited``, ``log_batch`` and ``interruption_notice``
   (the cloud is about to reclaim this spot instance, see ``agent/spot.py``) from the agent.
   The master sends ``ping`` every ``ping_interval`` seconds and the agent answers ``pong``;
   either side that hears nothing for ``ping_timeout`` seconds treats the connection as lost.

Messages the agent could not send while disconnected (exits, logs) are queued and sent after the
next ``hello``/``welcome``, in order.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)

PROTOCOL_VERSION = 1
AGENT_WS_PATH = "/agents/ws"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceType(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


class SlotInfo(_Message):
    """One schedulable slot: a GPU, or a share of the CPU on machines without GPUs."""

    id: int = Field(description="Index of the slot on its agent, from 0.")
    type: DeviceType
    brand: str = Field(default="", description="Device name, e.g. 'NVIDIA A10G' or the CPU model.")
    uuid: str = Field(default="", description="Stable device id (GPU UUID); empty for CPU slots.")


class RunningAllocation(_Message):
    allocation_id: str
    pid: int
    started_at: datetime


class LogEntry(_Message):
    timestamp: datetime
    stdtype: Literal["stdout", "stderr"]
    line: str


# ---- agent → master -------------------------------------------------------------------------


class Hello(_Message):
    type: Literal["hello"] = "hello"
    protocol_version: int = PROTOCOL_VERSION
    agent_id: str
    version: str
    resource_pool: str
    slots: list[SlotInfo]
    addresses: list[str] = Field(default_factory=list)
    running: list[RunningAllocation] = Field(default_factory=list)
    exited: list[str] = Field(
        default_factory=list,
        description="Allocations that ended while the master was unreachable and whose "
        "allocation_exited still waits in the outbox: the master keeps them for that message "
        "instead of failing them as lost.",
    )
    isolation: Literal["uid", "none"] = Field(
        default="none",
        description="uid: each task runs as its own unprivileged uid; none: tasks run as the "
        "agent's user and can read each other's environment and files.",
    )


class AllocationStarted(_Message):
    type: Literal["allocation_started"] = "allocation_started"
    allocation_id: str
    pid: int
    started_at: datetime


class AllocationExited(_Message):
    type: Literal["allocation_exited"] = "allocation_exited"
    allocation_id: str
    exit_code: int | None = Field(
        description="Process exit code; negative for a signal; None if it never started."
    )
    reason: str = Field(default="", description="Why it ended, when the agent knows more.")
    ended_at: datetime


class LogBatch(_Message):
    type: Literal["log_batch"] = "log_batch"
    allocation_id: str
    entries: list[LogEntry]


class Pong(_Message):
    type: Literal["pong"] = "pong"
    seq: int


class NoticeKind(StrEnum):
    """What the instance's metadata service announced."""

    # The cloud reclaims the instance at ``deadline`` (AWS spot instance-action, GCP preempted).
    INTERRUPTION = "interruption"
    # AWS rebalance recommendation: the instance is at elevated risk; no deadline yet.
    REBALANCE = "rebalance"


class InterruptionNotice(_Message):
    """The agent's instance is being reclaimed (or is at risk of it), as its metadata service
    said. Sent once per notice; queued like every message while the master is unreachable."""

    type: Literal["interruption_notice"] = "interruption_notice"
    kind: NoticeKind
    cloud: Literal["aws", "gcp"] = Field(description="Whose metadata service said so.")
    deadline: datetime | None = Field(
        description="When the instance is reclaimed (UTC): AWS's instance-action time, or GCP's "
        "preemption time plus its 30 s; None for a rebalance recommendation."
    )
    noticed_at: datetime = Field(description="When the agent saw the notice (UTC).")
    detail: str = Field(default="", description="The cloud's own words, e.g. 'terminate'.")


AgentMessage = Annotated[
    Hello | AllocationStarted | AllocationExited | LogBatch | Pong | InterruptionNotice,
    Field(discriminator="type"),
]
AgentMessageAdapter: TypeAdapter[AgentMessage] = TypeAdapter(AgentMessage)


# ---- master → agent -------------------------------------------------------------------------


class AgentOptions(_Message):
    ping_interval: float = Field(description="Seconds between the master's pings.")
    ping_timeout: float = Field(description="Seconds of silence after which the link is lost.")
    log_batch_interval: float = Field(description="Seconds an agent may hold log lines.")


class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    options: AgentOptions
    reattach: list[str] = Field(
        default_factory=list,
        description="Allocations from hello.running the master still wants; kill the rest.",
    )


class Reject(_Message):
    type: Literal["reject"] = "reject"
    reason: str


class BindMount(BaseModel):
    """A host directory to link into the task's directory (Determined's ``bind_mounts``)."""

    host_path: str
    container_path: str


class StartAllocation(_Message):
    type: Literal["start_allocation"] = "start_allocation"
    allocation_id: str
    task_id: str
    argv: list[str] = Field(description="Program and arguments, run without a shell.")
    env: dict[str, str] = Field(default_factory=dict)
    slot_ids: list[int] = Field(default_factory=list)
    files: dict[str, str] = Field(
        default_factory=dict,
        description="Context files to write into the working directory: path -> base64 bytes.",
    )
    bind_mounts: list[BindMount] = Field(
        default_factory=list,
        description="Host paths to link into the working directory where they exist.",
    )

    @model_serializer(mode="wrap")
    def _without_empty_mounts(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Agents from before bind mounts forbid unknown fields: send the field only when used.
        data = handler(self)
        if isinstance(data, dict) and not data.get("bind_mounts"):
            data.pop("bind_mounts", None)
        return data


class KillAllocation(_Message):
    type: Literal["kill_allocation"] = "kill_allocation"
    allocation_id: str
    reason: str = ""


class Ping(_Message):
    type: Literal["ping"] = "ping"
    seq: int


MasterMessage = Annotated[
    Welcome | Reject | StartAllocation | KillAllocation | Ping, Field(discriminator="type")
]
MasterMessageAdapter: TypeAdapter[MasterMessage] = TypeAdapter(MasterMessage)
