"""Pages of checkpoints as Determined lists them (an experiment's, a trial's), in any of its
orders — including by a validation metric, which is what Determined's SDK asks for by default
(``Experiment.list_checkpoints()`` sends ``sortByAttr=SORT_BY_SEARCHER_METRIC``).

A checkpoint's metrics are those of the validation its trial reported at the same step count
(the pairing checkpoint GC uses too); checkpoints without one sort last in either direction.
For the searcher metric an unspecified ``orderBy`` means best first (ascending when
``smaller_is_better``), as in Determined.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from master import models
from master.api.errors import bad_request
from master.api.paging import ORDERS, page
from master.experiments import views

SEARCHER_METRIC = "SORT_BY_SEARCHER_METRIC"
CHECKPOINT_SORTS: dict[str, Any] = {
    "SORT_BY_UNSPECIFIED": models.Checkpoint.report_time,
    "SORT_BY_UUID": models.Checkpoint.uuid,
    "SORT_BY_TRIAL_ID": models.Checkpoint.trial_id,
    "SORT_BY_BATCH_NUMBER": models.Checkpoint.steps_completed,
    "SORT_BY_END_TIME": models.Checkpoint.report_time,
    "SORT_BY_STATE": models.Checkpoint.state,
    SEARCHER_METRIC: None,  # the validation's searcher metric (below)
}


def _validation_value(value: Any) -> Any:
    """The latest validation report's ``value`` at the checkpoint's trial and step count."""
    return (
        select(value)
        .where(
            models.TrialMetrics.trial_id == models.Checkpoint.trial_id,
            models.TrialMetrics.group == "validation",
            models.TrialMetrics.steps_completed == models.Checkpoint.steps_completed,
        )
        .order_by(models.TrialMetrics.id.desc())
        .limit(1)
        .correlate(models.Checkpoint)
        .scalar_subquery()
    )


def checkpoint_order(
    sort_by: str, sort_by_metric: str, order_by: str, smaller_is_better: bool
) -> list[Any]:
    """ORDER BY clauses for ``sortByAttr``/``sortByMetric``/``orderBy``; a ``sortByMetric``
    (a validation metric's name) wins over ``sortByAttr``, as in Determined."""
    if order_by not in ORDERS:
        raise bad_request(f"orderBy: {order_by!r} is not one of {list(ORDERS)}")
    if sort_by not in CHECKPOINT_SORTS:
        raise bad_request(f"sortByAttr: {sort_by!r} is not one of {sorted(CHECKPOINT_SORTS)}")
    if sort_by_metric:
        column = _validation_value(models.TrialMetrics.metrics[sort_by_metric].as_float())
    elif sort_by == SEARCHER_METRIC:
        column = _validation_value(models.TrialMetrics.searcher_metric)
        if order_by == "ORDER_BY_UNSPECIFIED":
            order_by = "ORDER_BY_ASC" if smaller_is_better else "ORDER_BY_DESC"
    else:
        column = CHECKPOINT_SORTS[sort_by]
        return [column.desc() if order_by == "ORDER_BY_DESC" else column.asc()]
    ordered = column.desc() if order_by == "ORDER_BY_DESC" else column.asc()
    return [ordered.nulls_last()]


def smaller_is_better(session: Session, experiment_id: int) -> bool:
    experiment = session.get_one(models.Experiment, experiment_id)
    return bool((experiment.config.get("searcher") or {}).get("smaller_is_better", True))


def checkpoint_page(
    session: Session,
    where: list[Any],
    offset: int,
    limit: int,
    states: list[str],
    sort_by: str,
    order_by: str,
    *,
    sort_by_metric: str = "",
    experiment_id: int | None = None,
) -> dict[str, Any]:
    """A page of checkpoints matching ``where``; ``experiment_id`` says whose searcher's
    ``smaller_is_better`` orders by the searcher metric."""
    better_small = smaller_is_better(session, experiment_id) if experiment_id else True
    order = checkpoint_order(sort_by, sort_by_metric, order_by, better_small)
    if states:
        where = [*where, models.Checkpoint.state.in_(states)]
    total = session.scalar(select(func.count()).select_from(models.Checkpoint).where(*where))
    window = page(offset, limit, int(total or 0))
    rows = session.scalars(
        select(models.Checkpoint)
        .where(*where)
        .order_by(*order, models.Checkpoint.uuid)
        .offset(window.start)
        .limit(window.count)
    ).all()
    return {"checkpoints": views.checkpoints_json(session, rows), "pagination": window.pagination}
