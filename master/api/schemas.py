"""What the API answers, for the OpenAPI schema: response bodies, error bodies, content types.

These models only describe: routes keep building their dicts (``agent_json``, ``command_json``,
``views.experiments_json`` …) and return them unchanged, and each route names its model with
``documented(Model, …)`` (``response_model=None`` plus ``responses``, so nothing is re-validated
or filtered on the way out). Field names are Determined's camelCase, from snake_case attributes
through ``to_camel``; a field is required when the route always sends it, and ``| None`` when it
may be ``null``. Open-ended parts (configs, hyperparameters, metrics, metadata) are
``dict[str, Any]``.

How each route lists its errors and content types is :mod:`master.api.openapi`.
``tests/integration/test_openapi_conformance.py`` checks the schema against a live master with
Schemathesis.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from master.api.openapi import Shape, inline_schema

# ---- shared --------------------------------------------------------------------------------------


class Pagination(Shape):
    """Determined's ``v1Pagination``."""

    offset: int
    limit: int
    start_index: int
    end_index: int
    total: int


class Empty(Shape):
    """``{}``: the action was done."""


class Preemption(Shape):
    """Whether the allocation should checkpoint and exit."""

    preempt: bool


# ---- cluster -------------------------------------------------------------------------------------


class Info(Shape):
    version: str
    flotilla_version: str
    master_id: str
    cluster_id: str
    cluster_name: str
    telemetry_enabled: bool
    sso_providers: list[Any]
    external_login_uri: str | None
    external_logout_uri: str | None
    branding: str
    rbac_enabled: bool
    strict_job_queue_control: bool
    feature_switches: list[str]
    user_management_enabled: bool
    is_enterprise: bool
    has_custom_logo: bool
    product: str


class MasterInfo(Info):
    started_at: str | None
    external_url: str
    resource_pools: list[str]
    default_resource_pool: str


# ---- users and sessions --------------------------------------------------------------------------


class User(Shape):
    """Determined's ``v1User`` (``master.api.wire.user_json``)."""

    id: int
    username: str
    admin: bool
    active: bool
    agent_user_group: dict[str, Any] | None
    display_name: str
    modified_at: str | None
    remote: bool
    last_auth_at: str | None


class UserReply(Shape):
    user: User


class UserList(Shape):
    users: list[User]
    pagination: Pagination


class LoginReply(Shape):
    """A session token (also set as the session cookie) and who it belongs to."""

    token: str
    user: User
    csrf_token: str = Field(
        description="send as X-Flotilla-Csrf with every request the session cookie authenticates"
    )


# ---- allocations and the proxy -------------------------------------------------------------------


class RendezvousMember(Shape):
    agent_id: str
    address: str
    slots: int
    rank_offset: int


class RendezvousView(Shape):
    """Who of a multi-agent allocation has arrived; ``ready`` once all have."""

    ready: bool
    members: list[RendezvousMember]
    missing: list[str]
    master_addr: str | None
    master_port: int | None


class ProxyTicket(Shape):
    """A one-use ticket and the URL that redeems it for a cookie valid under the task's proxy."""

    ticket: str
    url: str


# ---- agents --------------------------------------------------------------------------------------


class Device(Shape):
    id: int
    brand: str
    uuid: str | None
    type: str


class Container(Shape):
    id: str
    parent: str
    state: str
    devices: list[Device]


class Slot(Shape):
    id: str
    device: Device
    enabled: bool
    draining: bool
    container: Container | None


class SlotStats(Shape):
    type_stats: dict[str, dict[str, int]]
    brand_stats: dict[str, dict[str, int]]


class InstanceInfo(Shape):
    """The cloud instance a provisioned agent runs on."""

    instance_type: str | None
    market: str | None
    price_per_hour: float | None
    zone: str | None
    launched_time: str | None


class Agent(Shape):
    id: str
    registered_time: str | None
    slots: dict[str, Slot]
    containers: dict[str, Container]
    enabled: bool
    draining: bool
    resource_pools: list[str]
    addresses: list[str]
    isolation: str = Field(
        description="How the agent separates tasks: 'uid' (each task its own uid) or 'none'"
    )
    version: str | None
    slot_stats: SlotStats
    idle_since: str | None
    instance: InstanceInfo | None


class AgentList(Shape):
    agents: list[Agent]
    pagination: Pagination


class AgentReply(Shape):
    agent: Agent


class SlotReply(Shape):
    slot: Slot


class MasterConfigReply(Shape):
    config: dict[str, Any]


class MasterLogEntry(Shape):
    id: int
    timestamp: str
    level: str
    message: str


class MasterLogResult(Shape):
    log_entry: MasterLogEntry


class MasterLogLine(Shape):
    result: MasterLogResult


# ---- resource pools ------------------------------------------------------------------------------


class PoolInstance(Shape):
    id: str
    instance_type: str
    zone: str | None
    market: str
    price_per_hour: float | None
    slots: int
    state: str
    launched_time: str | None


class PoolBackoff(Shape):
    offer: str
    until: str | None
    failures: int
    reason: str | None


class SpotFallbackState(Shape):
    active: bool = Field(description="buying on-demand now because spot is unavailable")
    reason: str | None


class Provisioning(Shape):
    provider: str
    instance_type: str
    spot: bool
    min_instances: int
    max_instances: int
    max_idle_agent_period: float | None = Field(
        description="seconds; null when off or auto (see idle_rule)"
    )
    idle_rule: str = Field(
        default="fixed", description="fixed (max_idle_agent_period), auto (break-even) or off"
    )
    max_cost_per_hour: float | None = Field(
        default=None, description="the pool's budget cap, $/hour; null when none"
    )
    spend_per_hour: float = Field(
        default=0.0, description="$/hour of the pool's live instances (spot at its price)"
    )
    market: str = Field(description="spot or on-demand: what the pool buys first")
    fallback: SpotFallbackState
    status: str
    degraded: str | None
    pending_slots: int
    last_pass: str | None
    instances: list[PoolInstance]
    backoffs: list[PoolBackoff]


class PoolStats(Shape):
    queued_count: int
    scheduled_count: int


class ResourcePool(Shape):
    name: str
    description: str
    type: str
    num_agents: int
    slots_available: int
    slots_used: int
    slot_type: str
    default_compute_pool: bool
    default_aux_pool: bool
    scheduler_type: str
    scheduler_fitting_policy: str
    min_agents: int
    max_agents: int
    slots_per_agent: int
    instance_type: str
    aux_container_capacity: int
    aux_containers_running: int
    stats: PoolStats
    provisioning: Provisioning | None


class ResourcePoolList(Shape):
    resource_pools: list[ResourcePool]
    pagination: Pagination


class PoolEvent(Shape):
    time: str | None
    instance_id: str | None
    kind: str
    reason: str | None


class PoolEvents(Shape):
    events: list[PoolEvent]


# ---- tasks and logs ------------------------------------------------------------------------------


class AllocationInfo(Shape):
    task_id: str
    allocation_id: str
    state: str
    is_ready: bool
    start_time: str | None
    end_time: str | None
    exit_code: int | None
    exit_reason: str | None
    waiting_reason: str | None
    slots: int
    resource_pool: str
    agents: list[str]


class Task(Shape):
    task_id: str
    task_type: str
    description: str
    allocations: list[AllocationInfo]
    start_time: str | None
    end_time: str | None
    state: str
    resource_pool: str


class TaskReply(Shape):
    task: Task


class AgentDevices(Shape):
    devices: list[dict[str, int]]


class AllocationResources(Shape):
    container_id: str
    agent_devices: dict[str, AgentDevices]


class AllocationSummary(Shape):
    task_id: str
    allocation_id: str
    name: str
    type: str
    state: str
    username: str
    registered_time: str | None
    resource_pool: str
    slots_needed: int
    priority: int
    scheduler_type: str
    resources: list[AllocationResources]


class TaskList(Shape):
    allocation_id_to_summary: dict[str, AllocationSummary]


class LogEntry(Shape):
    id: str
    task_id: str
    allocation_id: str | None
    agent_id: str | None
    container_id: str | None
    rank_id: int | None
    timestamp: str | None
    level: str
    stdtype: str | None
    source: str | None
    log: str
    message: str


class TrialLogEntry(LogEntry):
    trial_id: int


class LogLine(Shape):
    """One line of a log stream."""

    result: LogEntry


class TrialLogLine(Shape):
    """One line of a trial's log stream."""

    result: TrialLogEntry


# The NDJSON streams' line schemas, and a download's body.
LOG_LINE = inline_schema(LogLine)
TRIAL_LOG_LINE = inline_schema(TrialLogLine)
BINARY = {"type": "string", "format": "binary"}


# ---- commands and services -----------------------------------------------------------------------


class CommandContainer(Shape):
    id: str
    state: str


class Command(Shape):
    id: str
    description: str
    state: str
    container: CommandContainer | None
    username: str
    user_id: int
    display_name: str
    resource_pool: str
    exit_status: str | None
    exit_code: int | None
    job_id: str
    workspace_id: int
    registered_time: str | None
    start_time: str | None
    end_time: str | None
    idle_deadline: str | None = Field(
        description="when the task is killed if nothing uses it before; null without a timeout"
    )


class CommandReply(Shape):
    """A command and its config (secrets left out)."""

    command: Command
    config: dict[str, Any]


class CommandKilled(Shape):
    command: Command


class CommandList(Shape):
    commands: list[Command]


class UserGroup(Shape):
    user: str
    uid: int
    group: str
    gid: int


class Service(Command):
    """A shell, notebook or TensorBoard: a command plus where it is served. Shells add their key
    pair (``privateKey`` only for the owner, never in lists); TensorBoards what they show."""

    service_address: str
    is_ready: bool
    idle_timeout: str
    private_key: str | None = None
    public_key: str | None = None
    agent_user_group: UserGroup | None = None
    experiment_ids: list[int] | None = None
    trial_ids: list[int] | None = None


class ShellReply(Shape):
    shell: Service
    config: dict[str, Any]


class ShellKilled(Shape):
    shell: Service


class ShellList(Shape):
    shells: list[Service]


class NotebookReply(Shape):
    notebook: Service
    config: dict[str, Any]


class NotebookKilled(Shape):
    notebook: Service


class NotebookList(Shape):
    notebooks: list[Service]


class TensorboardReply(Shape):
    tensorboard: Service
    config: dict[str, Any]


class TensorboardKilled(Shape):
    tensorboard: Service


class TensorboardList(Shape):
    tensorboards: list[Service]


# Each service kind's reply models, by the plural in its path.
SERVICE_SHAPES: dict[str, tuple[type[Shape], type[Shape], type[Shape]]] = {
    "shells": (ShellReply, ShellKilled, ShellList),
    "notebooks": (NotebookReply, NotebookKilled, NotebookList),
    "tensorboards": (TensorboardReply, TensorboardKilled, TensorboardList),
}


# ---- workspaces and cost -------------------------------------------------------------------------


class Workspace(Shape):
    id: int
    name: str
    archived: bool
    error_message: str
    immutable: bool
    num_experiments: int
    num_projects: int
    pinned: bool
    state: str
    user_id: int
    username: str


class WorkspaceList(Shape):
    workspaces: list[Workspace]
    pagination: Pagination


class WorkspaceReply(Shape):
    workspace: Workspace


class CostGroup(Shape):
    key: str
    usd: float
    slot_hours: float
    idle: bool = Field(description="the idle row: money paid for slots that ran nothing")


class CostReport(Shape):
    since: str
    until: str
    group_by: str
    total_usd: float
    idle_usd: float
    instance_hours: float
    paid_slot_hours: float
    allocated_slot_hours: float
    efficiency: float | None = Field(
        description="allocated slot-hours / paid slot-hours (0..1); null when nothing was paid"
    )
    groups: list[CostGroup]
