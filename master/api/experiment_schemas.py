"""What the experiment, trial and checkpoint routes answer, for the OpenAPI schema — Determined's
``v1Experiment``, ``v1Trial``, ``v1Checkpoint`` and their lists (see :mod:`master.api.schemas` for
how these models describe replies)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from master.api.openapi import Shape
from master.api.schemas import Pagination

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
    cost_usd: float | None = Field(
        default=None,
        description="what its trials cost so far, as GET /api/v1/cost counts it (list and get)",
    )


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
    best_validation_metric: MetricsWorkload | None
    latest_validation_metric: MetricsWorkload | None
    searcher_metric_value: float | None
    best_checkpoint: CheckpointWorkload | None
    latest_checkpoint: str | None
    checkpoint_count: int
    total_checkpoint_size: str
    wall_clock_time: float
    duration: float = Field(description="seconds from its start to its end (or now)")
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
