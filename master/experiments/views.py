"""Experiments, trials and checkpoints as Determined's JSON (``v1Experiment``, ``trialv1Trial``,
``v1Checkpoint``): every field Determined's client requires, plus ``stateReason`` (why it is in
its state) which Determined has no field for.

Each function shapes a whole page of rows with a fixed number of queries (owners, labels, trial
counts, metrics and checkpoints are fetched for the page at once), so listing 100 experiments
is not 100 round trips.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from master import models
from master.api.wire import timestamp
from master.api.workspaces import DEFAULT_WORKSPACE_ID

DEFAULT_PROJECT_ID = 1
DEFAULT_PROJECT_NAME = "Uncategorized"
VALIDATION = "validation"


REDACTED = "********"


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The experiment config as shown to people: a storage ``secret_key`` is masked, as
    Determined masks it (trials get the real one in ``DET_EXPERIMENT_CONFIG``)."""
    storage = config.get("checkpoint_storage")
    if not isinstance(storage, dict) or not storage.get("secret_key"):
        return config
    return {**config, "checkpoint_storage": {**storage, "secret_key": REDACTED}}


def experiment_name(row: models.Experiment) -> str:
    return row.name or f"Experiment {row.id}"


def _duration_ms(start: datetime, end: datetime | None, now: datetime) -> int:
    return int(((end or now) - start).total_seconds() * 1000)


def _pick(extremes: tuple[float, float], smaller_is_better: bool) -> float:
    return extremes[0] if smaller_is_better else extremes[1]


def _metric_extremes(session: Session, trial_ids: Any) -> dict[int, tuple[float, float]]:
    """Each trial's (smallest, largest) searcher metric over its validations."""
    metric = models.TrialMetrics.searcher_metric
    rows = session.execute(
        select(models.TrialMetrics.trial_id, func.min(metric), func.max(metric))
        .where(
            models.TrialMetrics.trial_id.in_(trial_ids),
            models.TrialMetrics.group == VALIDATION,
            metric.is_not(None),
        )
        .group_by(models.TrialMetrics.trial_id)
    )
    return {
        trial_id: (low, high)
        for trial_id, low, high in rows
        if low is not None and high is not None
    }


def _smaller_is_better(config: dict[str, Any]) -> bool:
    return bool(config.get("searcher", {}).get("smaller_is_better", True))


def experiments_json(
    session: Session, rows: Sequence[models.Experiment], now: datetime
) -> list[dict[str, Any]]:
    ids = [r.id for r in rows]
    if not ids:
        return []
    owners = {
        u.id: u
        for u in session.scalars(
            select(models.User).where(models.User.id.in_({r.owner_id for r in rows}))
        )
    }
    labels: dict[int, list[str]] = defaultdict(list)
    for experiment_id, label in session.execute(
        select(models.ExperimentLabel.experiment_id, models.ExperimentLabel.label)
        .where(models.ExperimentLabel.experiment_id.in_(ids))
        .order_by(models.ExperimentLabel.label)
    ):
        labels[experiment_id].append(label)
    trial_ids: dict[int, list[int]] = defaultdict(list)
    for trial_id, experiment_id in session.execute(
        select(models.Trial.id, models.Trial.experiment_id)
        .where(models.Trial.experiment_id.in_(ids))
        .order_by(models.Trial.id)
    ):
        trial_ids[experiment_id].append(trial_id)
    # Each trial's extremes, aggregated in SQL: a trial may have reported a million validations.
    extremes = _metric_extremes(
        session, select(models.Trial.id).where(models.Trial.experiment_id.in_(ids))
    )
    checkpoints = {
        experiment_id: (count, size)
        for experiment_id, count, size in session.execute(
            select(
                models.Checkpoint.experiment_id,
                func.count(),
                func.coalesce(func.sum(models.Checkpoint.size), 0),
            )
            .where(
                models.Checkpoint.experiment_id.in_(ids),
                models.Checkpoint.state == "STATE_COMPLETED",
            )
            .group_by(models.Checkpoint.experiment_id)
        )
    }
    out = []
    for row in rows:
        owner = owners[row.owner_id]
        config = row.config
        smaller = _smaller_is_better(config)
        best_trial, best_metric = None, None
        for trial_id in trial_ids[row.id]:
            if trial_id not in extremes:
                continue
            value = _pick(extremes[trial_id], smaller)
            if best_metric is None or (value < best_metric if smaller else value > best_metric):
                best_trial, best_metric = trial_id, value
        count, size = checkpoints.get(row.id, (0, 0))
        searcher = config.get("searcher", {})
        out.append(
            {
                "id": row.id,
                "name": experiment_name(row),
                "description": row.description,
                "labels": labels[row.id],
                "startTime": timestamp(row.start_time),
                "endTime": timestamp(row.end_time),
                "state": row.state,
                "stateReason": row.state_reason,
                "archived": row.archived,
                "numTrials": len(trial_ids[row.id]),
                "trialIds": trial_ids[row.id],
                "displayName": owner.display_name or "",
                "userId": owner.id,
                "username": owner.username,
                "resourcePool": row.resource_pool,
                "searcherType": searcher.get("name", ""),
                "searcherMetric": searcher.get("metric", ""),
                "hyperparameters": config.get("hyperparameters", {}),
                "notes": row.notes,
                "jobId": job_id(row.id),
                "forkedFrom": None,
                "progress": row.progress,
                "projectId": DEFAULT_PROJECT_ID,
                "projectName": DEFAULT_PROJECT_NAME,
                "projectOwnerId": 1,
                "workspaceId": DEFAULT_WORKSPACE_ID,
                "workspaceName": DEFAULT_PROJECT_NAME,
                "parentArchived": False,
                "config": public_config(config),
                "originalConfig": row.original_config,
                "bestTrialId": best_trial,
                "bestTrialSearcherMetric": best_metric,
                "checkpointCount": int(count),
                "checkpointSize": str(int(size)),
                "modelDefinitionSize": row.model_definition_size,
                "duration": _duration_ms(row.start_time, row.end_time, now),
                "unmanaged": False,
                "externalExperimentId": None,
                "externalTrialId": None,
            }
        )
    return out


def job_id(experiment_id: int) -> str:
    return f"experiment-{experiment_id}"


def placeholder_experiment() -> dict[str, Any]:
    """What ``validateOnly`` answers: Determined's zero-valued experiment (nothing created)."""
    return {
        "id": 0,
        "name": "",
        "description": "",
        "labels": [],
        "startTime": None,
        "state": "STATE_UNSPECIFIED",
        "archived": False,
        "numTrials": 0,
        "username": "",
        "searcherType": "",
        "jobId": "",
        "projectId": DEFAULT_PROJECT_ID,
        "projectOwnerId": 1,
        "workspaceId": DEFAULT_WORKSPACE_ID,
        "parentArchived": False,
        "config": {},
        "originalConfig": "",
        "progress": 0.0,
    }


# ---- trials --------------------------------------------------------------------------------------


def metrics_workload(row: models.TrialMetrics | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "endTime": timestamp(row.report_time),
        "metrics": {"avgMetrics": row.metrics},
        "numInputs": 0,
        "totalBatches": row.steps_completed,
    }


def _sizes(resources: dict[str, Any]) -> dict[str, str]:
    return {path: str(size) for path, size in resources.items()}


def trials_json(
    session: Session, rows: Sequence[models.Trial], now: datetime
) -> list[dict[str, Any]]:
    ids = [t.id for t in rows]
    if not ids:
        return []
    # With the storage the experiment really uses (the master's default when its config names
    # none), as Determined fills it in: `det checkpoint download --mode direct` reads it.
    configs = {
        e.id: {
            **e.config,
            "checkpoint_storage": e.config.get("checkpoint_storage") or e.checkpoint_storage,
        }
        for e in session.scalars(
            select(models.Experiment).where(
                models.Experiment.id.in_({t.experiment_id for t in rows})
            )
        )
    }
    checkpoints: dict[int, list[models.Checkpoint]] = defaultdict(list)
    for checkpoint in session.scalars(
        select(models.Checkpoint)
        .where(models.Checkpoint.trial_id.in_(ids))
        .order_by(models.Checkpoint.report_time)
    ):
        checkpoints[checkpoint.trial_id].append(checkpoint)
    runs: dict[int, list[str]] = defaultdict(list)
    for trial_id, task_id in session.execute(
        select(models.TrialRun.trial_id, models.TrialRun.task_id)
        .where(models.TrialRun.trial_id.in_(ids))
        .order_by(models.TrialRun.run_id)
    ):
        runs[trial_id].append(task_id)
    smaller = {t.id: _smaller_is_better(configs[t.experiment_id]) for t in rows}
    best, latest = _best_and_latest(session, ids, smaller)
    at_checkpoints = _validations_at(
        session, {(c.trial_id, c.steps_completed) for cs in checkpoints.values() for c in cs}
    )
    out = []
    for trial in rows:
        completed = [c for c in checkpoints[trial.id] if c.state == "STATE_COMPLETED"]
        best_checkpoint = _best_checkpoint(completed, at_checkpoints, smaller[trial.id])
        out.append(
            {
                "id": trial.id,
                "experimentId": trial.experiment_id,
                "requestId": trial.request_id,
                "state": trial.state,
                "stateReason": trial.state_reason,
                "startTime": timestamp(trial.start_time),
                "endTime": timestamp(trial.end_time),
                "hparams": trial.hparams,
                "restarts": trial.restarts,
                "runId": trial.run_id,
                "totalBatchesProcessed": trial.total_batches,
                "progress": trial.progress,
                "bestValidation": metrics_workload(best.get(trial.id)),
                "latestValidation": metrics_workload(latest.get(trial.id)),
                # The console's names for them (the same shape).
                "bestValidationMetric": metrics_workload(best.get(trial.id)),
                "latestValidationMetric": metrics_workload(latest.get(trial.id)),
                "searcherMetricValue": best[trial.id].searcher_metric if trial.id in best else None,
                "bestCheckpoint": checkpoint_workload(best_checkpoint),
                "latestCheckpoint": trial.latest_checkpoint,
                "checkpointCount": len(completed),
                "totalCheckpointSize": str(sum(c.size for c in completed)),
                "wallClockTime": (trial.end_time or now).timestamp() - trial.start_time.timestamp(),
                "duration": round(((trial.end_time or now) - trial.start_time).total_seconds(), 3),
                "taskId": runs[trial.id][-1] if runs[trial.id] else None,
                "taskIds": runs[trial.id],
                "warmStartCheckpointUuid": None,
                "summaryMetrics": None,
                "metadata": {},
                "runnerState": None,
            }
        )
    return out


def _best_and_latest(
    session: Session, ids: list[int], smaller: dict[int, bool]
) -> tuple[dict[int, models.TrialMetrics], dict[int, models.TrialMetrics]]:
    """Each trial's best validation (the first report of its best searcher metric) and latest
    validation, found in SQL: only those rows are loaded, however many a trial reported."""
    extremes = _metric_extremes(session, ids)
    wanted = {trial_id: _pick(values, smaller[trial_id]) for trial_id, values in extremes.items()}
    latest_ids = session.scalars(
        select(func.max(models.TrialMetrics.id))
        .where(models.TrialMetrics.trial_id.in_(ids), models.TrialMetrics.group == VALIDATION)
        .group_by(models.TrialMetrics.trial_id)
    ).all()
    latest = {
        row.trial_id: row
        for row in session.scalars(
            select(models.TrialMetrics).where(models.TrialMetrics.id.in_(latest_ids))
        )
    }
    best: dict[int, models.TrialMetrics] = {}
    if wanted:
        candidates = session.scalars(
            select(models.TrialMetrics)
            .where(
                models.TrialMetrics.trial_id.in_(list(wanted)),
                models.TrialMetrics.group == VALIDATION,
                models.TrialMetrics.searcher_metric.in_(set(wanted.values())),
            )
            .order_by(models.TrialMetrics.id)
        )
        for row in candidates:
            if row.searcher_metric == wanted[row.trial_id]:
                best.setdefault(row.trial_id, row)
    return best, latest


def _validations_at(
    session: Session, steps: set[tuple[int, int]]
) -> dict[tuple[int, int], models.TrialMetrics]:
    """The (latest) validation report of each (trial, batches) asked for — the checkpoints'."""
    found: dict[tuple[int, int], models.TrialMetrics] = {}
    if not steps:
        return found
    for row in session.scalars(
        select(models.TrialMetrics)
        .where(
            models.TrialMetrics.trial_id.in_({trial for trial, _ in steps}),
            models.TrialMetrics.group == VALIDATION,
            models.TrialMetrics.steps_completed.in_({batches for _, batches in steps}),
        )
        .order_by(models.TrialMetrics.id)
    ):
        if (row.trial_id, row.steps_completed) in steps:
            found[(row.trial_id, row.steps_completed)] = row
    return found


def _best_checkpoint(
    checkpoints: list[models.Checkpoint],
    validations: dict[tuple[int, int], models.TrialMetrics],
    smaller: bool,
) -> models.Checkpoint | None:
    """The checkpoint with the best validation at its step count; else the latest one."""
    if not checkpoints:
        return None
    metric = {}
    for c in checkpoints:
        validation = validations.get((c.trial_id, c.steps_completed))
        if validation is not None and validation.searcher_metric is not None:
            metric[c.steps_completed] = validation.searcher_metric
    scored = [c for c in checkpoints if c.steps_completed in metric]
    if not scored:
        return checkpoints[-1]
    pick = min if smaller else max
    return pick(scored, key=lambda c: metric[c.steps_completed])


def checkpoint_workload(checkpoint: models.Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    return {
        "uuid": checkpoint.uuid,
        "state": checkpoint.state,
        "totalBatches": checkpoint.steps_completed,
        "endTime": timestamp(checkpoint.report_time),
        "resources": _sizes(checkpoint.resources),
        "metadata": checkpoint.metadata_,
    }


# ---- checkpoints ---------------------------------------------------------------------------------


def checkpoints_json(session: Session, rows: Sequence[models.Checkpoint]) -> list[dict[str, Any]]:
    if not rows:
        return []
    trials = {
        t.id: t
        for t in session.scalars(
            select(models.Trial).where(models.Trial.id.in_({c.trial_id for c in rows}))
        )
    }
    # With the storage the experiment really uses (the master's default when its config names
    # none), as Determined fills it in: `det checkpoint download --mode direct` reads it.
    configs = {
        e.id: {
            **e.config,
            "checkpoint_storage": e.config.get("checkpoint_storage") or e.checkpoint_storage,
        }
        for e in session.scalars(
            select(models.Experiment).where(
                models.Experiment.id.in_({c.experiment_id for c in rows})
            )
        )
    }
    validations = _validations_at(session, {(c.trial_id, c.steps_completed) for c in rows})
    out = []
    for checkpoint in rows:
        trial = trials[checkpoint.trial_id]
        validation = validations.get((checkpoint.trial_id, checkpoint.steps_completed))
        out.append(
            {
                "uuid": checkpoint.uuid,
                "taskId": checkpoint.task_id,
                "allocationId": checkpoint.allocation_id,
                "reportTime": timestamp(checkpoint.report_time),
                "resources": _sizes(checkpoint.resources),
                "metadata": checkpoint.metadata_,
                "state": checkpoint.state,
                "storageId": None,
                "training": {
                    "trialId": trial.id,
                    "experimentId": checkpoint.experiment_id,
                    "experimentConfig": public_config(configs[checkpoint.experiment_id]),
                    "hparams": trial.hparams,
                    "searcherMetric": validation.searcher_metric if validation else None,
                    "validationMetrics": {"avgMetrics": validation.metrics} if validation else None,
                    "trainingMetrics": None,
                },
            }
        )
    return out
