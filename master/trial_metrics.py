"""Writing ``trial_metrics`` rows: the hot path of a fleet of reporting trials.

A trial's reporter sends every report queued since its last request (``harness.core.reporter``),
so one request brings up to ``MAX_REPORTS_PER_REQUEST`` rows of one trial. They are written with
one statement through the DB-API, with no ORM object or SQLAlchemy type processing per row:
``INSERT … VALUES (…), (…) … ON CONFLICT (trial_id, report_key) DO NOTHING`` on PostgreSQL (one
round trip, psycopg2's ``execute_values``), one ``executemany`` of tuples on SQLite (in-process).

Idempotency is the unique index on ``(trial_id, report_key)``: a key the trial has stored (a
retried request), or one repeated within the rows, is skipped by the statement itself, and a
concurrent transaction inserting the same key makes this one wait for it and then skip the row
(PostgreSQL), or runs before or after it (SQLite's single writer). Rows without a key (``NULL``)
never conflict. The statement's count of inserted rows is what was stored.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from psycopg2.extras import execute_values
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from master import models

_COLUMNS = (
    "trial_id",
    "trial_run_id",
    '"group"',
    "steps_completed",
    "metrics",
    "searcher_metric",
    "report_time",
    "report_key",
)
_INSERT = f"INSERT INTO trial_metrics ({', '.join(_COLUMNS)}) VALUES"
_CONFLICT = "ON CONFLICT (trial_id, report_key) DO NOTHING"
_PG_INSERT = f"{_INSERT} %s {_CONFLICT} RETURNING 1"
_SQLITE_INSERT = f"{_INSERT} ({', '.join('?' * len(_COLUMNS))}) {_CONFLICT}"


class MetricsRow(NamedTuple):
    """One report as stored; ``metrics`` is the values' JSON text (what the ORM's JSON column
    writes: ``json.dumps`` of the mapping)."""

    trial_id: int
    trial_run_id: int
    group: str
    steps_completed: int
    metrics: str
    searcher_metric: float | None
    report_time: datetime
    report_key: str | None


def metrics_json(values: dict[str, Any]) -> str:
    return json.dumps(values)


class TrialFacts(NamedTuple):
    """What storing a trial's metrics needs to know of it."""

    run_id: int
    searcher_metric: str | None  # the experiment's ``searcher.metric``


def trial_facts(session: Session, trial_id: int) -> TrialFacts | None:
    """The trial's current run and its searcher's metric name, in one query (None: no trial)."""
    trial, experiment = models.Trial, models.Experiment
    row = session.execute(
        select(trial.run_id, experiment.config["searcher"]["metric"].as_string())
        .join(experiment, experiment.id == trial.experiment_id)
        .where(trial.id == trial_id)
    ).first()
    return None if row is None else TrialFacts(row[0], row[1])


def insert_metrics(session: Session, rows: Sequence[MetricsRow]) -> int:
    """Insert ``rows`` in the session's transaction with one statement, skipping every key
    already stored for its trial; returns how many rows were inserted."""
    if not rows:
        return 0
    connection = session.connection()
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    with contextlib.closing(dbapi.cursor()) as cursor:
        if connection.dialect.name == "postgresql":
            inserted = execute_values(cursor, _PG_INSERT, rows, page_size=len(rows), fetch=True)
            return len(inserted)
        cursor.executemany(
            _SQLITE_INSERT,
            [(*row[:6], models.sqlite_datetime(row.report_time), row.report_key) for row in rows],
        )
        return int(cursor.rowcount)


def raise_total_batches(session: Session, trial_id: int, steps: int) -> None:
    """The trial's ``total_batches`` becomes ``steps`` if that is more (one statement)."""
    trial = models.Trial
    session.execute(
        update(trial)
        .where(trial.id == trial_id, trial.total_batches < steps)
        .values(total_batches=steps)
        .execution_options(synchronize_session=False)
    )
