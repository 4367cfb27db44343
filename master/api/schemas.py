"""What the API answers, for the OpenAPI schema: response bodies, error bodies, content types.

These models only describe: routes keep building their dicts (``agent_json``, ``command_json``,
``views.experiments_json`` …) and return them unchanged, and each route names its model with
``documented(Model, …)`` (``response_model=None`` plus ``responses``, so nothing is re-validated
or filtered on the way out). Field names are Determined's camelCase, from snake_case attributes
through ``to_camel``; a field is required when the route always sends it, and ``| None`` when it
may be ``null``. Open-ended parts (configs, hyperparameters, metrics, metadata) are
``dict[str, Any]``.

Every operation lists the errors it can answer, in ``master.api.errors.error_body``'s shape:
the routers get ``API_ERRORS`` (or ``PUBLIC_ERRORS``) where ``master.app`` includes them, and a
route adds the ones only it can send (404 for a path that names something, 409, 429). No
operation lists 422: validation errors are 400. ``tests/integration/test_openapi_conformance.py``
checks the schema against a live master with Schemathesis.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

NDJSON = "application/x-ndjson"
TAR = "application/x-tar"


class Shape(BaseModel):
    """A response body as the routes send it: camelCase field names on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# ---- errors --------------------------------------------------------------------------------------


class ErrorDetail(Shape):
    code: int
    reason: str
    error: str


class ErrorBody(Shape):
    """``master.api.errors.error_body``: Determined's client reads ``message`` for 403/404 and
    ``error.error`` for every other status."""

    code: int
    message: str
    details: list[Any]
    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "The request is invalid: the message names the parameter or field and what is allowed.",
    401: "No valid credentials: log in, or use the task's own token where the route needs it.",
    403: "Authenticated, but not allowed: an admin route, another user's object, a scoped token.",
    404: "What the path names does not exist.",
    409: "The object is not in a state that allows this.",
    413: "The request body is larger than the master accepts.",
    429: "Too many attempts; retry after the seconds in Retry-After.",
    500: "An unexpected error; the message carries an error id the master logged.",
    503: "Not available right now: the password checker is saturated (login, with "
    "Retry-After), or the task's service is not ready yet (the message says what it is doing).",
}

_RETRY_AFTER = {
    "description": "Seconds until the next attempt may succeed.",
    "schema": {"type": "integer", "minimum": 0},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``statuses``, each with the error body's schema."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]}
        if status in (429, 503):
            responses[status]["headers"] = {"Retry-After": _RETRY_AFTER}
    return responses


# Every API router: bad parameters or bodies, missing or insufficient credentials, oversized
# bodies, unexpected errors. Routes add 404, 409 and 429 where they can send them.
API_ERRORS = error_responses(400, 401, 403, 413, 500)
# Routers that need no credentials (``/info``): everything but 401 and 403.
PUBLIC_ERRORS = error_responses(400, 413, 500)


def documented(model: type[BaseModel] | None, *statuses: int) -> dict[str, Any]:
    """Route keyword arguments: a JSON 200 described by ``model`` (returned as the route built
    it) and the extra error ``statuses`` this route can answer."""
    ok: dict[str, Any] = {"model": model} if model is not None else {}
    return {"response_model": None, "responses": {200: ok, **error_responses(*statuses)}}


def inline_schema(
    model: type[BaseModel], mode: Literal["validation", "serialization"] = "serialization"
) -> dict[str, Any]:
    """``model``'s JSON schema (camelCase) with its nested models written in place, for bodies
    FastAPI does not register models for (a stream's line, a body a route reads itself)."""
    schema = model.model_json_schema(by_alias=True, mode=mode)
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def streamed(media_type: str, schema: dict[str, Any], *statuses: int) -> dict[str, Any]:
    """Route keyword arguments for a streamed 200 of ``media_type`` whose body (for NDJSON:
    each line) has ``schema``; no ``application/json`` is listed for it."""
    content = {media_type: {"schema": schema}}
    return {
        "response_model": None,
        "response_class": StreamingResponse,
        "responses": {200: {"content": content}, **error_responses(*statuses)},
    }


def without_validation_errors(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that drops FastAPI's 422 responses (and their schemas):
    the master answers validation errors with 400 (``master.api.errors``), never 422."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


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


class Provisioning(Shape):
    provider: str
    instance_type: str
    spot: bool
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


class CostReport(Shape):
    since: str
    until: str
    group_by: str
    total_usd: float
    idle_usd: float
    instance_hours: float
    groups: list[CostGroup]


# ---- experiments ---------------------------------------------------------------------------------


class Experiment(Shape):
    """Determined's ``v1Experiment`` (``validateOnly`` answers its zero value, which leaves the
    optional fields out)."""

    id: int
    name: str
    description: str | None
    labels: list[str]
    start_time: str | None
    state: str
    archived: bool
    num_trials: int
    username: str
    searcher_type: str
    job_id: str
    project_id: int
    project_owner_id: int
    workspace_id: int
    parent_archived: bool
    config: dict[str, Any]
    original_config: str | None
    progress: float | None
    end_time: str | None = None
    state_reason: str | None = None
    trial_ids: list[int] | None = None
    display_name: str | None = None
    user_id: int | None = None
    resource_pool: str | None = None
    searcher_metric: str | None = None
    hyperparameters: dict[str, Any] | None = None
    notes: str | None = None
    forked_from: int | None = None
    project_name: str | None = None
    workspace_name: str | None = None
    best_trial_id: int | None = None
    best_trial_searcher_metric: float | None = None
    checkpoint_count: int | None = None
    checkpoint_size: str | None = None
    model_definition_size: int | None = None
    duration: int | None = None
    unmanaged: bool | None = None
    external_experiment_id: str | None = None
    external_trial_id: str | None = None


class JobSummary(Shape):
    state: str
    jobs_ahead: int


class ExperimentCreated(Shape):
    experiment: Experiment
    config: dict[str, Any]


class ExperimentReply(Shape):
    experiment: Experiment
    config: dict[str, Any]
    job_summary: JobSummary | None


class ExperimentList(Shape):
    experiments: list[Experiment]
    pagination: Pagination


class ModelDefinition(Shape):
    b64_tgz: str


class Labels(Shape):
    labels: list[str]


# ---- trials --------------------------------------------------------------------------------------


class Metrics(Shape):
    """Determined's metrics envelope: ``{"avgMetrics": {name: value}}``."""

    avg_metrics: dict[str, Any] | None


class MetricsWorkload(Shape):
    end_time: str | None
    metrics: Metrics
    num_inputs: int
    total_batches: int


class CheckpointWorkload(Shape):
    uuid: str
    state: str
    total_batches: int
    end_time: str | None
    resources: dict[str, str]
    metadata: dict[str, Any] | None


class Trial(Shape):
    """Determined's ``trialv1Trial``."""

    id: int
    experiment_id: int
    request_id: str | None
    state: str
    state_reason: str | None
    start_time: str | None
    end_time: str | None
    hparams: dict[str, Any] | None
    restarts: int
    run_id: int
    total_batches_processed: int
    progress: float | None
    best_validation: MetricsWorkload | None
    latest_validation: MetricsWorkload | None
    searcher_metric_value: float | None
    best_checkpoint: CheckpointWorkload | None
    latest_checkpoint: str | None
    checkpoint_count: int
    total_checkpoint_size: str
    wall_clock_time: float
    task_id: str | None
    task_ids: list[str]
    warm_start_checkpoint_uuid: str | None
    summary_metrics: dict[str, Any] | None
    metadata: dict[str, Any] | None
    runner_state: str | None


class TrialReply(Shape):
    trial: Trial


class TrialList(Shape):
    trials: list[Trial]
    pagination: Pagination


class MetricsReport(Shape):
    trial_id: int
    trial_run_id: int
    group: str
    steps_completed: int
    metrics: Metrics
    searcher_metric: float | None
    report_time: str | None


class MetricsList(Shape):
    metrics: list[MetricsReport]


class Workload(Shape):
    """Exactly one of the three kinds."""

    training: MetricsWorkload | None = None
    validation: MetricsWorkload | None = None
    checkpoint: CheckpointWorkload | None = None


class WorkloadList(Shape):
    workloads: list[Workload]
    pagination: Pagination


class ValidateAfter(Shape):
    length: int


class SearcherOp(Shape):
    validate_after: ValidateAfter


class SearcherOperation(Shape):
    """The trial's next operation; ``completed`` with no ``op``: stop cleanly."""

    op: SearcherOp | None
    completed: bool


# ---- checkpoints ---------------------------------------------------------------------------------


class CheckpointTraining(Shape):
    trial_id: int
    experiment_id: int
    experiment_config: dict[str, Any]
    hparams: dict[str, Any] | None
    searcher_metric: float | None
    validation_metrics: Metrics | None
    training_metrics: Metrics | None


class Checkpoint(Shape):
    """Determined's ``v1Checkpoint``."""

    uuid: str
    task_id: str | None
    allocation_id: str | None
    report_time: str | None
    resources: dict[str, str]
    metadata: dict[str, Any] | None
    state: str
    storage_id: int | None
    training: CheckpointTraining


class CheckpointReply(Shape):
    checkpoint: Checkpoint


class CheckpointList(Shape):
    checkpoints: list[Checkpoint]
    pagination: Pagination
