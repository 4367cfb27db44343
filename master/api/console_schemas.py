"""What the console's routes answer, for the OpenAPI schema (see :mod:`master.api.schemas` for
how these models are used: they describe, routes build their dicts): metric series, the fleet's
instances, the queue, scale events and the cost time series."""

from __future__ import annotations

from pydantic import Field

from master.api.openapi import Shape
from master.api.schemas import CostGroup

# ---- metric series -------------------------------------------------------------------------------


class MetricSeries(Shape):
    trial_id: int
    group: str
    name: str
    points: list[tuple[int, float]] = Field(description="[batches, value] pairs, by batches")
    total: int = Field(description="raw points of the series (after the cursor, with `after`)")
    downsampled: bool


class MetricNames(Shape):
    training: list[str]
    validation: list[str]


class MetricSeriesReply(Shape):
    cursor: int = Field(description="pass as `after` to get only the points reported since")
    names: MetricNames
    series: list[MetricSeries]


# ---- fleet ---------------------------------------------------------------------------------------


class FleetInstance(Shape):
    id: str
    resource_pool: str
    provider: str
    instance_type: str
    zone: str | None
    market: str
    price_per_hour: float
    slots: int
    state: str = Field(description="starting, idle, busy, draining, terminating or terminated")
    launched_time: str | None
    joined_time: str | None
    terminated_time: str | None
    uptime_seconds: float
    cost_usd: float
    agent_id: str | None
    idle_since: str | None
    idle_deadline: str | None
    launch_reason: str
    termination_reason: str | None
    allocations: list[str] = Field(description="ids of the tasks running on it")


class InstanceList(Shape):
    now: str
    instances: list[FleetInstance]


class QueuedJob(Shape):
    position: int
    task_id: str
    allocation_id: str
    type: str = Field(description="EXPERIMENT, COMMAND, SHELL, NOTEBOOK or TENSORBOARD")
    name: str
    username: str
    priority: int
    slots: int
    resource_pool: str
    queued_time: str | None
    waiting_seconds: float
    reason: str


class Queue(Shape):
    jobs: list[QueuedJob]


class ScaleEvent(Shape):
    id: int
    time: str | None
    resource_pool: str
    instance_id: str | None
    kind: str
    reason: str


class ScaleEventList(Shape):
    events: list[ScaleEvent]


# ---- cost series ---------------------------------------------------------------------------------


class CostBucket(Shape):
    start: str
    end: str
    total_usd: float
    idle_usd: float
    groups: list[CostGroup]


class CostSeries(Shape):
    since: str
    until: str
    bucket: str
    group_by: str
    total_usd: float
    idle_usd: float
    buckets: list[CostBucket]
