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


def _best(values: list[float], smaller_is_better: bool) -> float | None:
    if not values:
        return None
    return min(values) if smaller_is_better else max(values)


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
    metrics: dict[int, list[float]] = defaultdict(list)
    for trial_id, metric in session.execute(
        select(models.TrialMetrics.trial_id, models.TrialMetrics.searcher_metric)
        .join(models.Trial, models.Trial.id == models.TrialMetrics.trial_id)
        .where(
            models.Trial.experiment_id.in_(ids),
            models.TrialMetrics.group == VALIDATION,
            models.TrialMetrics.searcher_metric.is_not(None),
        )
    ):
        if metric is not None:
            metrics[trial_id].append(metric)
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
            value = _best(metrics.get(trial_id, []), smaller)
            if value is None:
                continue
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
    validations: dict[int, list[models.TrialMetrics]] = defaultdict(list)
    for metric in session.scalars(
        select(models.TrialMetrics)
        .where(models.TrialMetrics.trial_id.in_(ids), models.TrialMetrics.group == VALIDATION)
        .order_by(models.TrialMetrics.id)
    ):
        validations[metric.trial_id].append(metric)
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
    out = []
    for trial in rows:
        smaller = _smaller_is_better(configs[trial.experiment_id])
        scored = [v for v in validations[trial.id] if v.searcher_metric is not None]
        best = None
        if scored:
            pick = min if smaller else max
            best = pick(scored, key=lambda v: v.searcher_metric or 0.0)
        latest = validations[trial.id][-1] if validations[trial.id] else None
        completed = [c for c in checkpoints[trial.id] if c.state == "STATE_COMPLETED"]
        best_checkpoint = _best_checkpoint(completed, validations[trial.id], smaller)
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
                "bestValidation": metrics_workload(best),
                "latestValidation": metrics_workload(latest),
                # The console's names for them (the same shape).
                "bestValidationMetric": metrics_workload(best),
                "latestValidationMetric": metrics_workload(latest),
                "searcherMetricValue": best.searcher_metric if best else None,
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


def _best_checkpoint(
    checkpoints: list[models.Checkpoint], validations: list[models.TrialMetrics], smaller: bool
) -> models.Checkpoint | None:
    """The checkpoint with the best validation at its step count; else the latest one."""
    if not checkpoints:
        return None
    metric = {
        v.steps_completed: v.searcher_metric for v in validations if v.searcher_metric is not None
    }
    scored = [c for c in checkpoints if metric.get(c.steps_completed) is not None]
    if not scored:
        return checkpoints[-1]
    pick = min if smaller else max
    return pick(scored, key=lambda c: metric[c.steps_completed] or 0.0)


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
    validations: dict[tuple[int, int], models.TrialMetrics] = {}
    for metric in session.scalars(
        select(models.TrialMetrics)
        .where(
            models.TrialMetrics.trial_id.in_(list(trials)),
            models.TrialMetrics.group == VALIDATION,
        )
        .order_by(models.TrialMetrics.id)
    ):
        validations[(metric.trial_id, metric.steps_completed)] = metric
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
