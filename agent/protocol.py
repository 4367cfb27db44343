"""The wire protocol between an agent and the master.

One WebSocket per agent, opened by the agent to ``/agents/ws`` with the cluster join token as
``Authorization: Bearer <token>``. Every frame is one JSON object with a ``type`` field naming the
message; both sides parse frames with :data:`AgentMessageAdapter` / :data:`MasterMessageAdapter`
so an unknown or malformed message is rejected with a pydantic error, never half-applied.

Order of a connection:

1. agent → ``hello``: who it is (its id, and ``boot_id``: which run of the agent *process*), its
   slots, and the allocations it is still running (after a master restart or a network blip
   these are re-attached instead of failed).
2. master → ``welcome``: liveness options, which of the reported allocations to keep (the
   agent kills every running allocation the master does not list), and ``last_seq``: the last
   sequence number it applied from this agent process (0: none). Or ``reject`` (unknown pool,
   other protocol version) and the master closes the socket.
3. The agent drops what it queued up to ``last_seq`` and sends the rest, oldest first: replayed
   messages keep their ``seq``.
4. Then any order: ``start_allocation`` / ``kill_allocation`` from the master;
   ``allocation_started``, ``allocation_exited``, ``log_batch`` and ``interruption_notice``
   (the cloud is about to reclaim this spot instance, see ``agent/spot.py``) from the agent,
   each with its ``seq``; ``ack`` from the master (everything up to its ``seq`` is applied and
   stored: the agent forgets it). The master sends ``ping`` every ``ping_interval`` seconds and
   the agent answers ``pong``; either side that hears nothing for ``ping_timeout`` seconds
   treats the connection as lost.

Sequence numbers: every message the agent's outbox sends (:data:`Sequenced`) carries ``seq``,
1, 2, 3, … per agent process, in send order, kept across reconnects (a message sent again after
a reconnect keeps its number); a new agent process (a new ``boot_id``) starts again from 1. The
master applies a message only if its ``seq`` is above the last it applied for that agent process,
so nothing is applied twice, and the agent keeps every message until an ``ack`` (or the next
``welcome``'s ``last_seq``) covers it, so nothing is lost. ``hello`` and ``pong`` carry none.

``allocation_exited`` is also the agent's word that it has sent everything for that allocation
(its logs go before it, in the same FIFO): the master accepts log batches for an allocation it
has already ended, from the agent that ran it, until then.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
)
from typing_extensions import TypedDict

PROTOCOL_VERSION = 2
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


SEQ_DESCRIPTION = (
    "Position of this message in its agent process's stream, from 1, set by the outbox when "
    "the message is first sent (0: not numbered yet, never applied by the master)."
)


# ---- agent → master -------------------------------------------------------------------------


class Hello(_Message):
    type: Literal["hello"] = "hello"
    protocol_version: int = PROTOCOL_VERSION
    agent_id: str
    boot_id: str = Field(
        default="",
        description="Identity of this run of the agent process (a uuid made at start): the "
        "master tells an agent that restarted (its tasks died with it) from one that only "
        "reconnected. Always set since protocol 2 (the default lets a master parse an older "
        "agent's hello, to reject it by its protocol_version).",
    )
    booted_at: datetime | None = Field(
        default=None, description="When this agent process started (UTC); set since protocol 2."
    )
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
    seq: int = Field(default=0, ge=0, description=SEQ_DESCRIPTION)
    allocation_id: str
    pid: int
    started_at: datetime


class AllocationExited(_Message):
    """The allocation ended on this agent, and everything the agent had for it (its logs) has
    been queued before this message: the master takes no log batch for it after this."""

    type: Literal["allocation_exited"] = "allocation_exited"
    seq: int = Field(default=0, ge=0, description=SEQ_DESCRIPTION)
    allocation_id: str
    exit_code: int | None = Field(
        description="Process exit code; negative for a signal; None if it never started."
    )
    reason: str = Field(default="", description="Why it ended, when the agent knows more.")
    ended_at: datetime


class LogBatch(_Message):
    type: Literal["log_batch"] = "log_batch"
    seq: int = Field(default=0, ge=0, description=SEQ_DESCRIPTION)
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
    seq: int = Field(default=0, ge=0, description=SEQ_DESCRIPTION)
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
Sequenced = AllocationStarted | AllocationExited | LogBatch | InterruptionNotice


class LogEntryFrame(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    timestamp: datetime
    stdtype: Literal["stdout", "stderr"]
    line: str


class LogBatchFrame(TypedDict):
    """:class:`LogBatch` as plain dicts: the master's fast path for the one message that comes
    by the thousand lines (a model object per line costs more than storing the line). Same
    fields and rules as the model; a frame this rejects is parsed again with
    :data:`AgentMessageAdapter`, whose error is the one reported."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    type: Literal["log_batch"]
    seq: NotRequired[Annotated[int, Field(ge=0)]]
    allocation_id: str
    entries: list[LogEntryFrame]


LogBatchFrameAdapter: TypeAdapter[LogBatchFrame] = TypeAdapter(LogBatchFrame)


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
    last_seq: int = Field(
        default=0,
        ge=0,
        description="The last seq the master applied from this agent process (hello.boot_id); "
        "0 for a process it has not heard from. The agent sends what follows it.",
    )


class Ack(_Message):
    """Everything up to ``seq`` from this agent process is applied and stored; the agent may
    forget it. Sent every fraction of a second while there is something new to acknowledge."""

    type: Literal["ack"] = "ack"
    seq: int = Field(ge=0)


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
    Welcome | Reject | StartAllocation | KillAllocation | Ping | Ack, Field(discriminator="type")
]
MasterMessageAdapter: TypeAdapter[MasterMessage] = TypeAdapter(MasterMessage)
