"""``/api/v1/trials/{id}``: what people ask of a trial (describe, logs, metrics, workloads,
kill, checkpoints). What a running trial reports is in :mod:`master.api.trial_reports`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from master import auth, models
from master.api.checkpoint_pages import checkpoint_page
from master.api.errors import bad_request, not_found
from master.api.experiment_schemas import (
    CheckpointList,
    MetricsList,
    TrialReply,
    WorkloadList,
)
from master.api.experiments import (
    check_owner,
    engine_call,
    engine_of,
    master_state,
)
from master.api.openapi import NDJSON, documented, streamed
from master.api.paging import page, sort_order_desc
from master.api.schemas import TRIAL_LOG_LINE, Empty
from master.api.tasks import FOLLOW_POLL_SECONDS, LOG_PAGE, LogPageEncoder
from master.api.wire import Int64, timestamp
from master.experiments import views
from master.experiments.live import KillTrial
from master.experiments.states import TRIAL_TERMINAL
from master.logs import read_log_page

router = APIRouter(prefix="/api/v1/trials")


def load_trial(session: Session, trial_id: int) -> models.Trial:
    row = session.get(models.Trial, trial_id)
    if row is None:
        raise not_found(f"trial {trial_id}")
    return row


# ---- what people ask -----------------------------------------------------------------------------


@router.get("/{trial_id}", **documented(TrialReply, 404))
def get_trial(
    trial_id: Int64, request: Request, _: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = master_state(request)
    with state.db.session() as session:
        return {
            "trial": views.trials_json(session, [load_trial(session, trial_id)], state.clock())[0]
        }


@router.post("/{trial_id}/kill", **documented(Empty, 404, 409))
async def kill_trial(
    trial_id: Int64, request: Request, user: models.User = Depends(auth.current_user)
) -> dict[str, Any]:
    state = master_state(request)

    def owner(session: Session) -> int:
        trial = load_trial(session, trial_id)
        return session.get_one(models.Experiment, trial.experiment_id).owner_id

    check_owner(user, await state.db.run(owner), "trial")
    await engine_call(engine_of(request), KillTrial(trial_id, by=user.username))
    return {}


@router.get("/{trial_id}/checkpoints", **documented(CheckpointList, 404))
def trial_checkpoints(
    trial_id: Int64,
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    states: list[str] = Query([]),
    sort_by: str = Query("SORT_BY_UNSPECIFIED", alias="sortByAttr"),
    order_by: str = Query("ORDER_BY_UNSPECIFIED", alias="orderBy"),
    sort_by_metric: str = Query("", alias="sortByMetric"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    with master_state(request).db.session() as session:
        trial = load_trial(session, trial_id)
        where = [models.Checkpoint.trial_id == trial_id]
        return checkpoint_page(
            session,
            where,
            offset,
            limit,
            states,
            sort_by,
            order_by,
            sort_by_metric=sort_by_metric,
            experiment_id=trial.experiment_id,
        )


@router.get("/{trial_id}/metrics", **documented(MetricsList, 404))
def trial_metrics(
    trial_id: Int64,
    request: Request,
    group: str | None = None,
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Every metrics report of the trial (optionally of one ``group``), oldest first."""
    with master_state(request).db.session() as session:
        load_trial(session, trial_id)
        query = select(models.TrialMetrics).where(models.TrialMetrics.trial_id == trial_id)
        if group:
            query = query.where(models.TrialMetrics.group == group)
        rows = session.scalars(query.order_by(models.TrialMetrics.id))
        return {
            "metrics": [
                {
                    "trialId": r.trial_id,
                    "trialRunId": r.trial_run_id,
                    "group": r.group,
                    "stepsCompleted": r.steps_completed,
                    "metrics": {"avgMetrics": r.metrics},
                    "searcherMetric": r.searcher_metric,
                    "reportTime": timestamp(r.report_time),
                }
                for r in rows
            ]
        }


_WORKLOAD_FILTERS = {
    "FILTER_OPTION_UNSPECIFIED": {"training", "validation", "checkpoint"},
    "FILTER_OPTION_CHECKPOINT": {"checkpoint"},
    "FILTER_OPTION_VALIDATION": {"validation"},
    "FILTER_OPTION_CHECKPOINT_OR_VALIDATION": {"validation", "checkpoint"},
}
_WORKLOAD_ORDER = {"training": 0, "validation": 1, "checkpoint": 2}


@router.get("/{trial_id}/workloads", **documented(WorkloadList, 404))
def trial_workloads(
    trial_id: Int64,
    request: Request,
    offset: Int64 = 0,
    limit: Int64 = 0,
    filter_option: str = Query("FILTER_OPTION_UNSPECIFIED", alias="filter"),
    order_by: str = Query("ORDER_BY_ASC", alias="orderBy"),
    remove_deleted: bool = Query(False, alias="removeDeletedCheckpoints"),
    _: models.User = Depends(auth.current_user),
) -> dict[str, Any]:
    """Determined's workloads (what ``det trial describe`` shows): each training report,
    validation and checkpoint, by batches trained; ``limit`` 0: all of them."""
    kinds = _WORKLOAD_FILTERS.get(filter_option)
    if kinds is None:
        raise bad_request(f"filter: {filter_option!r} is not one of {sorted(_WORKLOAD_FILTERS)}")
    with master_state(request).db.session() as session:
        load_trial(session, trial_id)
        found: list[tuple[int, int, dict[str, Any]]] = []
        for row in session.scalars(
            select(models.TrialMetrics)
            .where(models.TrialMetrics.trial_id == trial_id)
            .order_by(models.TrialMetrics.id)
        ):
            kind = "validation" if row.group == views.VALIDATION else "training"
            if kind in kinds and row.group in ("training", views.VALIDATION):
                workload = views.metrics_workload(row)
                found.append((row.steps_completed, _WORKLOAD_ORDER[kind], {kind: workload}))
        if "checkpoint" in kinds:
            for checkpoint in session.scalars(
                select(models.Checkpoint)
                .where(models.Checkpoint.trial_id == trial_id)
                .order_by(models.Checkpoint.report_time)
            ):
                if remove_deleted and checkpoint.state == "STATE_DELETED":
                    continue
                workload = views.checkpoint_workload(checkpoint)
                found.append((checkpoint.steps_completed, 2, {"checkpoint": workload}))
    found.sort(key=lambda item: item[:2], reverse=sort_order_desc(order_by))
    window = page(offset, limit, len(found))
    workloads = [item[2] for item in found[window.start : window.start + window.count]]
    return {"workloads": workloads, "pagination": window.pagination}


def _trial_logs(
    session: Session, trial_id: int, after_id: int, limit: int, encoder: LogPageEncoder
) -> tuple[bytes, int, int, bool, str | None]:
    """Log lines of all the trial's runs after ``after_id``, encoded (bytes, rows, last id),
    whether the trial has ended, and its latest run's task (to wait on for more)."""
    trial = load_trial(session, trial_id)
    ended = trial.state in {s.value for s in TRIAL_TERMINAL}
    task_ids = list(
        session.scalars(
            select(models.TrialRun.task_id)
            .where(models.TrialRun.trial_id == trial_id)
            .order_by(models.TrialRun.run_id)
        )
    )
    if not task_ids:
        return b"", 0, after_id, ended, None
    rows = read_log_page(session, task_ids, after_id, limit)
    last = rows[-1][0] if rows else after_id
    return encoder.encode(rows), len(rows), last, ended, task_ids[-1]


@router.get("/{trial_id}/logs", **streamed(NDJSON, TRIAL_LOG_LINE, 404))
async def trial_logs(
    trial_id: Int64,
    request: Request,
    follow: bool = False,
    limit: int = Query(0, ge=0),
    _: models.User = Depends(auth.current_user),
) -> StreamingResponse:
    """The logs of every run of the trial, as newline-delimited ``{"result": …}`` like task
    logs (with ``trialId``); ``follow`` streams until the trial has ended."""
    state = master_state(request)
    await state.db.run(lambda s: load_trial(s, trial_id))

    # Determined's CLI prints a trial log's ``message`` as is: it ends with the newline.
    encoder = LogPageEncoder(trial_id=trial_id)

    async def lines() -> AsyncIterator[bytes]:
        last, sent = 0, 0
        while True:
            while True:
                size = min(LOG_PAGE, limit - sent) if limit else LOG_PAGE
                chunk, count, last, ended, latest = await state.db.run(
                    partial(
                        _trial_logs, trial_id=trial_id, after_id=last, limit=size, encoder=encoder
                    )
                )
                if chunk:
                    yield chunk
                sent += count
                if limit and sent >= limit:
                    return
                if count < size:
                    break
            # ``ended`` was read with the last page: every line of an ended trial is stored
            # before it ends, so nothing is left once it has.
            if not follow or ended or await request.is_disconnected():
                return
            if latest is None:
                await state.logs.wait(f"trial-{trial_id}", FOLLOW_POLL_SECONDS)
            else:
                await state.logs.wait(latest, FOLLOW_POLL_SECONDS)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
