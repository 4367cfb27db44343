"""``/api/v1/trials/metrics/…``: Determined's metric streams, what its SDK reads metrics with
(``Trial.iter_metrics(group)``, ``Determined.iter_trials_metrics``, the deprecated
``get_trials_training_metrics`` / ``…validation_metrics``).

Each answers newline-delimited ``{"result": {"metrics": [v1MetricsReport, …]}}`` batches, oldest
report first, and — as Determined's master does — keeps streaming new reports until every
trial asked for has ended (a finished trial's stream ends once its reports are sent). Values
sit under Determined's keys: ``validation_metrics`` for the ``validation`` group,
``avg_metrics`` for every other.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.errors import bad_request, not_found
from master.api.experiments import master_state
from master.api.openapi import NDJSON, Shape, inline_schema, streamed
from master.api.wire import Int64, timestamp
from master.experiments.states import TRIAL_TERMINAL

router = APIRouter(prefix="/api/v1/trials/metrics")

BATCH_REPORTS = 1000
POLL_SECONDS = 1.0
MAX_TRIALS = 1000
_TERMINAL = {state.value for state in TRIAL_TERMINAL}


class MetricsReport(Shape):
    """Determined's ``v1MetricsReport``."""

    id: int
    trial_id: int
    trial_run_id: int
    group: str
    total_batches: int
    metrics: dict[str, Any]
    end_time: str | None
    archived: bool


class MetricsBatch(Shape):
    metrics: list[MetricsReport]


class MetricsLine(Shape):
    result: MetricsBatch


METRICS_LINE = inline_schema(MetricsLine)


def report_json(row: models.TrialMetrics) -> dict[str, Any]:
    key = "validation_metrics" if row.group == "validation" else "avg_metrics"
    return {
        "id": row.id,
        "trialId": row.trial_id,
        "trialRunId": row.trial_run_id,
        "group": row.group,
        "totalBatches": row.steps_completed,
        "metrics": {key: row.metrics},
        "endTime": timestamp(row.report_time),
        "archived": False,
    }


def _check_trials(session: Session, trial_ids: list[int]) -> None:
    found = set(session.scalars(select(models.Trial.id).where(models.Trial.id.in_(trial_ids))))
    missing = sorted(set(trial_ids) - found)
    if missing:
        raise not_found(f"trial {missing[0]}")


def _batch(
    session: Session, trial_ids: list[int], group: str | None, after_id: int
) -> tuple[list[dict[str, Any]], bool]:
    """Reports after ``after_id`` (one batch) and whether every trial had ended before they were
    read (so nothing can follow them)."""
    states = session.scalars(select(models.Trial.state).where(models.Trial.id.in_(trial_ids)))
    ended = all(state in _TERMINAL for state in states)
    query = select(models.TrialMetrics).where(
        models.TrialMetrics.trial_id.in_(trial_ids), models.TrialMetrics.id > after_id
    )
    if group is not None:
        query = query.where(models.TrialMetrics.group == group)
    rows = session.scalars(query.order_by(models.TrialMetrics.id).limit(BATCH_REPORTS))
    return [report_json(row) for row in rows], ended


def _stream(request: Request, trial_ids: list[int], group: str | None) -> StreamingResponse:
    if not trial_ids:
        raise bad_request("trialIds: at least one trial id is required")
    if len(trial_ids) > MAX_TRIALS:
        raise bad_request(f"trialIds: {len(trial_ids)} ids; at most {MAX_TRIALS} per request")
    if group is not None and not group:
        raise bad_request("group: required, the metric group (e.g. training, validation)")
    state = master_state(request)

    async def lines() -> AsyncIterator[bytes]:
        last = 0
        while True:
            reports, ended = await state.db.run(
                partial(_batch, trial_ids=trial_ids, group=group, after_id=last)
            )
            if reports:
                last = reports[-1]["id"]
                yield (json.dumps({"result": {"metrics": reports}}) + "\n").encode()
                continue
            if ended or await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(lines(), media_type=NDJSON)


async def _checked_stream(
    request: Request, trial_ids: list[int], group: str | None
) -> StreamingResponse:
    await master_state(request).db.run(partial(_check_trials, trial_ids=trial_ids))
    return _stream(request, trial_ids, group)


@router.get("/trial_metrics", **streamed(NDJSON, METRICS_LINE, 404))
async def trial_metrics(
    request: Request,
    trial_ids: list[Int64] = Query([], alias="trialIds"),
    group: str = "",
    _: models.User = Depends(auth.current_user),
) -> StreamingResponse:
    """The trials' reports of one metric ``group`` (``training``, ``validation``, or any group
    a trial reported)."""
    return await _checked_stream(request, trial_ids, group)


@router.get("/training_metrics", **streamed(NDJSON, METRICS_LINE, 404))
async def training_metrics(
    request: Request,
    trial_ids: list[Int64] = Query([], alias="trialIds"),
    _: models.User = Depends(auth.current_user),
) -> StreamingResponse:
    return await _checked_stream(request, trial_ids, "training")


@router.get("/validation_metrics", **streamed(NDJSON, METRICS_LINE, 404))
async def validation_metrics(
    request: Request,
    trial_ids: list[Int64] = Query([], alias="trialIds"),
    _: models.User = Depends(auth.current_user),
) -> StreamingResponse:
    return await _checked_stream(request, trial_ids, "validation")
