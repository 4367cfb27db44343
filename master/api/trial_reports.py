"""What a running trial reports under ``/api/v1/trials/{id}``: metrics (one, or many per
request at ``/reports``), progress, early exit, searcher operations and completed operations.

A trial's reports take its run's own allocation token (``DET_SESSION_TOKEN``), checked to
belong to a run of that very trial: a user's login token cannot report for a trial, nor can
one trial report for another. Tokens die with their allocation, so only the current run can.
The check is cached per token (:mod:`master.token_cache`; revocation empties the cache).

Every report may carry an idempotency key (the ``Idempotency-Key`` header, or each batched
report's ``key``), made by the harness when the report was made. The master stores each key
once per trial in the transaction that applies the report, and answers a repeat as it answered
the original, without applying it again: the harness may then retry any request whose answer
it did not get (docs/design/experiments.md, "REST used by the harness").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.storage import validate_uuid
from master import auth, models
from master.api.errors import ApiError, bad_request
from master.api.experiment_schemas import SearcherOperation
from master.api.experiments import engine_call, engine_of, master_state
from master.api.openapi import documented
from master.api.schemas import Empty
from master.api.trials import load_trial
from master.api.wire import Int64, WireModel
from master.experiments import views
from master.experiments.launch import TASK_TYPE
from master.experiments.live import EarlyExit, TrialProgress, ValidationCompleted
from master.token_cache import TRIAL_TOKENS, TrialToken
from master.trial_metrics import (
    MetricsRow,
    insert_metrics,
    metrics_json,
    raise_total_batches,
    trial_facts,
)

router = APIRouter(prefix="/api/v1/trials")

# Reports one ``POST /reports`` may carry (the harness sends at most its queue's worth).
MAX_REPORTS_PER_REQUEST = 1000
KEY_MAX_LENGTH = 64
IDEMPOTENCY_HEADER = "Idempotency-Key"


# ---- the trial's own token -----------------------------------------------------------------------


def token_trial(session: Session, token: str, now: datetime) -> TrialToken | None:
    """What a task token stands for if it is a running trial's (None otherwise)."""
    row = session.execute(
        select(models.UserSession.allocation_id, models.UserSession.expires_at).where(
            models.UserSession.token_hash == auth.token_digest(token),
            models.UserSession.scope == auth.TASK,
        )
    ).first()
    if row is None or row[1] <= now:
        return None
    allocation_id, expires_at = row
    if allocation_id is None:
        return None
    allocation = session.get(models.Allocation, allocation_id)
    if allocation is None or allocation.ended_at is not None:
        return None
    task = session.get(models.Task, allocation.task_id)
    if task is None or task.task_type != TASK_TYPE or "trial_id" not in task.config:
        return None
    return TrialToken(allocation_id, int(task.config["trial_id"]), expires_at)


async def trial_token_for(request: Request, trial_id: int | None) -> tuple[str, int]:
    """``(allocation id, trial id)`` of the calling run; 401/403 unless it is a run's own token
    (of trial ``trial_id`` when given)."""
    state = master_state(request)
    token = auth.request_token(request)
    if token is None:
        raise ApiError(401, "authentication required: this call takes the trial's own token")
    now = state.clock()
    digest = auth.token_digest(token)
    found = TRIAL_TOKENS.get(digest, now)
    if found is None:
        generation = TRIAL_TOKENS.generation
        found = await state.db.run(partial(token_trial, token=token, now=now))
        if found is not None:
            TRIAL_TOKENS.put(digest, found, generation)
    if found is None:
        raise ApiError(
            403,
            "only a running trial may report this, with its own token (DET_SESSION_TOKEN); "
            "this token belongs to no running trial",
        )
    if trial_id is not None and found.trial_id != trial_id:
        raise ApiError(
            403, f"this token belongs to a run of trial {found.trial_id}, not of trial {trial_id}"
        )
    return found.allocation_id, found.trial_id


def idempotency_key(value: str | None) -> str | None:
    if value is not None and not 0 < len(value) <= KEY_MAX_LENGTH:
        raise bad_request(f"{IDEMPOTENCY_HEADER}: 1 to {KEY_MAX_LENGTH} characters")
    return value


def key_seen(session: Session, trial_id: int, key: str) -> bool:
    """Whether a non-metrics report with ``key`` was applied for the trial."""
    return session.get(models.TrialReportKey, (trial_id, key)) is not None


def remember_key(session: Session, trial_id: int, key: str, kind: str, now: datetime) -> None:
    session.add(models.TrialReportKey(trial_id=trial_id, key=key, kind=kind, created_at=now))


# ---- metrics ---------------------------------------------------------------------------------


class LooseBody(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# ---- checkpoints -----------------------------------------------------------------------------

COMPLETED = "STATE_COMPLETED"


class CheckpointBody(LooseBody):
    uuid: str
    task_id: str | None = Field(default=None, alias="taskId")
    allocation_id: str | None = Field(default=None, alias="allocationId")
    report_time: datetime | None = Field(default=None, alias="reportTime")
    resources: dict[str, int | str] = {}
    metadata: dict[str, Any] = {}
    state: str = COMPLETED


class ReportCheckpointRequest(WireModel):
    checkpoint: CheckpointBody


def _size(path: str, value: int | str) -> int:
    try:
        size = int(value)
    except ValueError:
        raise bad_request(f"checkpoint.resources.{path}: {value!r} is not a byte count") from None
    if size < 0:
        raise bad_request(f"checkpoint.resources.{path}: {size} is negative")
    return size


def store_checkpoint(
    session: Session,
    body: CheckpointBody,
    trial_id: int,
    allocation_id: str,
    now: datetime,
    key: str | None = None,
) -> None:
    if key is not None:
        if key_seen(session, trial_id, key):
            return  # reported again with its idempotency key (a retried request)
        remember_key(session, trial_id, key, "checkpoint", now)
    existing = session.get(models.Checkpoint, body.uuid)
    if existing is not None:
        if existing.trial_id == trial_id:
            return  # reported again (a retried request)
        raise ApiError(409, f"checkpoint.uuid: {body.uuid} is another trial's checkpoint")
    steps = body.metadata.get("steps_completed")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise bad_request(
            "checkpoint.metadata.steps_completed: required, the number of batches trained "
            f"(a non-negative integer), got {steps!r}"
        )
    resources = {path: _size(path, size) for path, size in body.resources.items()}
    trial = load_trial(session, trial_id)
    session.add(
        models.Checkpoint(
            uuid=body.uuid,
            trial_id=trial_id,
            experiment_id=trial.experiment_id,
            task_id=body.task_id,
            allocation_id=allocation_id,
            state=COMPLETED,
            report_time=body.report_time or now,
            steps_completed=steps,
            resources=resources,
            size=sum(resources.values()),
            metadata_=body.metadata,
        )
    )
    trial.latest_checkpoint = body.uuid


def check_checkpoint(checkpoint: CheckpointBody, allocation_id: str, where: str) -> None:
    """Refuse a checkpoint report that is not the calling allocation's, or not complete."""
    if checkpoint.allocation_id not in (None, allocation_id):
        raise ApiError(
            403,
            f"{where}.allocationId: {checkpoint.allocation_id} is not the calling "
            f"allocation {allocation_id}",
        )
    try:
        validate_uuid(checkpoint.uuid)
    except ValueError as exc:
        raise bad_request(f"{where}.uuid: {exc}") from exc
    if checkpoint.state != COMPLETED:
        raise bad_request(
            f"{where}.state: {checkpoint.state!r}; only {COMPLETED} checkpoints are reported"
        )


class TrialMetricsBody(LooseBody):
    trial_id: int | None = Field(default=None, alias="trialId")
    trial_run_id: int | None = Field(default=None, alias="trialRunId")
    steps_completed: int = Field(alias="stepsCompleted", ge=0)
    avg_metrics: dict[str, Any] | None = Field(default=None, alias="avgMetrics")
    metrics: dict[str, Any] | None = None  # Determined's shape: {"avgMetrics": {...}}


class ReportMetricsRequest(WireModel):
    metrics: TrialMetricsBody
    group: str = Field(min_length=1, max_length=64)


def _searcher_metric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _values(body: ReportMetricsRequest) -> dict[str, Any]:
    metrics = body.metrics
    values = metrics.avg_metrics
    if values is None and metrics.metrics is not None:
        values = metrics.metrics.get("avgMetrics")
    if not isinstance(values, dict):
        raise bad_request("metrics.avgMetrics: expected a mapping of metric names to values")
    return values


def store_metrics(
    session: Session,
    trial_id: int,
    reports: Sequence[tuple[str | None, ReportMetricsRequest]],
    now: datetime,
) -> int:
    """Store ``(key, report)``\\ s in one transaction, skipping keys the trial has stored (or
    that repeat within ``reports``; :mod:`master.trial_metrics`); returns how many were stored."""
    facts = trial_facts(session, trial_id)
    if facts is None:
        raise ApiError(404, f"trial {trial_id} not found")
    rows: list[MetricsRow] = []
    for key, body in reports:
        values = _values(body)
        searcher_metric = None
        if body.group == views.VALIDATION and facts.searcher_metric in values:
            searcher_metric = _searcher_metric(values[facts.searcher_metric])
        steps = body.metrics.steps_completed
        run_id = body.metrics.trial_run_id or facts.run_id
        rows.append(
            MetricsRow(
                trial_id, run_id, body.group, steps, metrics_json(values), searcher_metric, now, key
            )
        )
    stored = insert_metrics(session, rows)
    if stored:
        raise_total_batches(session, trial_id, max(row.steps_completed for row in rows))
    return stored


async def _store(
    request: Request, trial_id: int, reports: list[tuple[str | None, ReportMetricsRequest]]
) -> int:
    state = master_state(request)
    call = partial(store_metrics, trial_id=trial_id, reports=reports, now=state.clock())
    return await state.db.run(call)


def _check_metrics_trial(trial_id: int, body: ReportMetricsRequest, where: str) -> None:
    if body.metrics.trial_id not in (None, trial_id):
        found = body.metrics.trial_id
        raise bad_request(f"{where}metrics.trialId: {found} is not trial {trial_id}")


@router.post("/{trial_id}/metrics", **documented(Empty, 404, 409))
async def report_metrics(
    trial_id: Int64,
    body: ReportMetricsRequest,
    request: Request,
    key: str | None = Header(None, alias=IDEMPOTENCY_HEADER),
) -> dict[str, Any]:
    """One metrics report (Determined's route); with an ``Idempotency-Key`` it is stored once."""
    await trial_token_for(request, trial_id)
    _check_metrics_trial(trial_id, body, "")
    await _store(request, trial_id, [(idempotency_key(key), body)])
    return {}


class TrialReport(WireModel):
    """One queued report: ``metrics`` (the body of ``POST /metrics``), ``progress``, or a
    ``checkpoint`` (the ``checkpoint`` of ``POST /api/v1/checkpoints``)."""

    key: str = Field(min_length=1, max_length=KEY_MAX_LENGTH)
    metrics: ReportMetricsRequest | None = None
    progress: float | None = Field(default=None, ge=0, le=1)
    checkpoint: CheckpointBody | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TrialReport:
        kinds = (self.metrics, self.progress, self.checkpoint)
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError("a report carries exactly one of metrics, progress and checkpoint")
        return self


class TrialReportsRequest(WireModel):
    reports: list[TrialReport] = Field(min_length=1, max_length=MAX_REPORTS_PER_REQUEST)


class TrialReportsReply(BaseModel):
    stored: int = Field(description="metrics reports stored by this request")
    repeated: int = Field(description="metrics reports whose key was already stored (skipped)")


@router.post("/{trial_id}/reports", **documented(TrialReportsReply, 404, 409))
async def report_many(
    trial_id: Int64, body: TrialReportsRequest, request: Request
) -> dict[str, Any]:
    """Many reports in order, as the harness queued them: the metrics are stored in one
    transaction (each key once), then the checkpoints (each key once; a checkpoint comes after
    the metrics of its steps), then the last progress is applied."""
    allocation_id, _ = await trial_token_for(request, trial_id)
    metrics: list[tuple[str | None, ReportMetricsRequest]] = []
    checkpoints: list[tuple[str, CheckpointBody]] = []
    progress = None
    for index, report in enumerate(body.reports):
        if report.metrics is not None:
            _check_metrics_trial(trial_id, report.metrics, f"reports[{index}].")
            metrics.append((report.key, report.metrics))
        elif report.checkpoint is not None:
            check_checkpoint(report.checkpoint, allocation_id, f"reports[{index}].checkpoint")
            checkpoints.append((report.key, report.checkpoint))
        else:
            progress = report.progress
    stored = await _store(request, trial_id, metrics) if metrics else 0
    if checkpoints:
        state = master_state(request)

        def write(session: Session) -> None:
            for key, checkpoint in checkpoints:
                store_checkpoint(session, checkpoint, trial_id, allocation_id, state.clock(), key)

        await state.db.run(write)
    if progress is not None:
        await _apply_progress(request, trial_id, progress)
    return {"stored": stored, "repeated": len(metrics) - stored}


# ---- progress, early exit, searcher --------------------------------------------------------------


class ProgressRequest(WireModel):
    progress: float = Field(ge=0, le=1)
    trial_id: int | None = None
    is_raw: bool | None = None


async def _apply_progress(request: Request, trial_id: int, progress: float) -> None:
    # The engine stores it and moves the experiment's progress with it; a trial it no longer
    # runs (a late report) only gets its row written. Setting a value is idempotent, and the
    # harness sends in order, so progress keys are accepted but not stored.
    if await engine_call(engine_of(request), TrialProgress(trial_id, progress)):
        return

    def write(session: Session) -> None:
        trial = session.get(models.Trial, trial_id)
        if trial is None:
            raise ApiError(404, f"trial {trial_id} not found")
        trial.progress = progress

    await master_state(request).db.run(write)


@router.post("/{trial_id}/progress", **documented(Empty, 404, 409))
async def report_progress(
    trial_id: Int64, body: ProgressRequest, request: Request
) -> dict[str, Any]:
    await trial_token_for(request, trial_id)
    await _apply_progress(request, trial_id, body.progress)
    return {}


class EarlyExitRequest(WireModel):
    reason: str


@router.post("/{trial_id}/early_exit", **documented(Empty, 404, 409))
async def report_early_exit(
    trial_id: Int64,
    body: EarlyExitRequest,
    request: Request,
    key: str | None = Header(None, alias=IDEMPOTENCY_HEADER),
) -> dict[str, Any]:
    await trial_token_for(request, trial_id)
    event = EarlyExit(trial_id, body.reason, key=idempotency_key(key))
    await engine_call(engine_of(request), event)
    return {}


@router.get("/{trial_id}/searcher/operation", **documented(SearcherOperation, 404, 409))
async def searcher_operation(trial_id: Int64, request: Request) -> dict[str, Any]:
    """The operation the trial should run next: ``{"op": {"validateAfter": {"length": N}} |
    null, "completed": bool}``; ``completed`` with no op means stop cleanly."""
    await trial_token_for(request, trial_id)
    length, completed = engine_of(request).searcher_operation(trial_id)
    op = {"validateAfter": {"length": length}} if length is not None else None
    return {"op": op, "completed": completed and op is None}


class ValidateAfterBody(WireModel):
    length: int = Field(ge=0)


class CompletedOp(WireModel):
    validate_after: ValidateAfterBody


class CompletedOperationRequest(WireModel):
    op: CompletedOp
    searcher_metric: Any = None


@router.post("/{trial_id}/searcher/completed_operation", **documented(Empty, 404, 409))
async def completed_operation(
    trial_id: Int64,
    body: CompletedOperationRequest,
    request: Request,
    key: str | None = Header(None, alias=IDEMPOTENCY_HEADER),
) -> dict[str, Any]:
    """The trial validated after the operation's length; with an ``Idempotency-Key``, a repeat
    is answered ``{}`` and the searcher hears it once."""
    await trial_token_for(request, trial_id)
    metric = _searcher_metric(body.searcher_metric)
    if metric is None:
        raise bad_request(f"searcherMetric: expected a finite number, got {body.searcher_metric!r}")
    length = body.op.validate_after.length
    event = ValidationCompleted(trial_id, length, metric, key=idempotency_key(key))
    await engine_call(engine_of(request), event)
    return {}
