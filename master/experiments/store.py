"""The experiment engine's reads and writes: each function is one transaction's work.

The engine changes memory first, gathers the rows an event touched in a :class:`Change`, and
writes them at once: the searcher's snapshot, the experiment's and trials' states and any new
trials land together or not at all. REST handlers write other columns of the same rows
(latest checkpoint, batches, progress, labels), so every update names its columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from master import models
from master.experiments import warm_start
from master.experiments.states import EXPERIMENT_TERMINAL, TRIAL_TERMINAL


@dataclass(frozen=True)
class NewTrialRow:
    request_id: str
    hparams: dict[str, Any]
    state: str


@dataclass
class Change:
    experiment_id: int
    experiment: dict[str, Any] = field(default_factory=dict)
    trials: dict[int, dict[str, Any]] = field(default_factory=dict)
    new_trials: list[NewTrialRow] = field(default_factory=list)
    handled_tasks: list[str] = field(default_factory=list)  # runs whose end was processed
    # (trial id, idempotency key, kind) of the reports this change applies, stored with it.
    report_keys: list[tuple[int, str, str]] = field(default_factory=list)

    def trial(self, trial_id: int) -> dict[str, Any]:
        return self.trials.setdefault(trial_id, {})


def apply_change(session: Session, change: Change, now: datetime) -> dict[str, int]:
    """Write ``change``; returns the ids of the new trials by request id."""
    if change.experiment:
        session.execute(
            update(models.Experiment)
            .where(models.Experiment.id == change.experiment_id)
            .values(**change.experiment)
        )
    terminal = {state.value for state in TRIAL_TERMINAL}
    for trial_id, values in change.trials.items():
        if values:
            session.execute(
                update(models.Trial).where(models.Trial.id == trial_id).values(**values)
            )
        if values.get("state") in terminal:
            # Nothing reports for an ended trial: its report keys are not needed any more.
            session.execute(
                delete(models.TrialReportKey).where(models.TrialReportKey.trial_id == trial_id)
            )
    for trial_id, key, kind in change.report_keys:
        session.add(models.TrialReportKey(trial_id=trial_id, key=key, kind=kind, created_at=now))
    created = {}
    for new in change.new_trials:
        row = models.Trial(
            experiment_id=change.experiment_id,
            request_id=new.request_id,
            state=new.state,
            hparams=new.hparams,
            restarts=0,
            run_id=0,
            total_batches=0,
            progress=0.0,
            start_time=now,
        )
        session.add(row)
        session.flush()
        created[new.request_id] = row.id
    for task_id in change.handled_tasks:
        session.execute(
            update(models.TrialRun)
            .where(models.TrialRun.task_id == task_id)
            .values(exit_handled=True)
        )
        _strip_files(session, task_id, change.experiment_id)
    return created


def report_key_seen(session: Session, trial_id: int, key: str) -> bool:
    """Whether a report of the trial with idempotency ``key`` was applied (not metrics: their
    keys are on their rows)."""
    return session.get(models.TrialReportKey, (trial_id, key)) is not None


def _strip_files(session: Session, task_id: str, experiment_id: int) -> None:
    """An ended run's task needs its copy of the model definition no more (the experiment
    keeps one): drop it, so stored tasks do not grow by the model's size with every run."""
    task = session.get(models.Task, task_id)
    if task is None or not task.config.get("launch", {}).get("files"):
        return
    launch = {**task.config["launch"], "files": {}}
    launch["files_note"] = f"the model definition of experiment {experiment_id}"
    task.config = {**task.config, "launch": launch}


@dataclass(frozen=True)
class Initial:
    """The first state of a new experiment, computed once its id (the searcher's seed) is known."""

    state: str
    searcher_state: dict[str, Any]
    progress: float
    trials: list[NewTrialRow]


def insert_experiment(
    session: Session,
    values: dict[str, Any],
    labels: list[str],
    files: dict[str, str],
    initial: Callable[[int], Initial],
    now: datetime,
) -> tuple[int, dict[str, int]]:
    """A new experiment, its labels, model definition and first trials, in one transaction."""
    row = models.Experiment(**values, state="STATE_ACTIVE", start_time=now)
    session.add(row)
    session.flush()
    for label in dict.fromkeys(labels):
        session.add(models.ExperimentLabel(experiment_id=row.id, label=label))
    session.add(models.ExperimentModelDefinition(experiment_id=row.id, files=files))
    first = initial(row.id)
    row.state = first.state
    row.searcher_state = first.searcher_state
    row.progress = first.progress
    change = Change(row.id, new_trials=first.trials)
    return row.id, apply_change(session, change, now)


# ---- launching a run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInputs:
    files: dict[str, str]
    latest_checkpoint: str | None
    hparams: dict[str, Any]
    warm_start: warm_start.WarmStart | None = None


def start_run(
    session: Session, trial_id: int, run_id: int, warm_start_checkpoint: str | None = None
) -> RunInputs:
    """Count the run on the trial and read what it needs: model files, hyperparameters and
    the checkpoint to resume from. A trial with no checkpoint of its own yet (a first run, or
    a restart after crashing before its first checkpoint) starts from the experiment's
    ``warm_start_checkpoint`` if it has one; once it has its own, it resumes from that."""
    session.execute(
        update(models.Trial)
        .where(models.Trial.id == trial_id)
        .values(run_id=run_id, early_exit=None)
    )
    trial = session.get_one(models.Trial, trial_id)
    definition = session.get(models.ExperimentModelDefinition, trial.experiment_id)
    files = dict(definition.files) if definition is not None else {}
    warm = None
    if trial.latest_checkpoint is None and warm_start_checkpoint is not None:
        warm = warm_start.for_run(session, warm_start_checkpoint)
    return RunInputs(files, trial.latest_checkpoint, dict(trial.hparams), warm)


def last_task(session: Session, trial_id: int) -> tuple[str, str] | None:
    """The task and allocation of the trial's latest run."""
    row = session.execute(
        select(models.TrialRun.task_id, models.TrialRun.allocation_id)
        .where(models.TrialRun.trial_id == trial_id)
        .order_by(models.TrialRun.run_id.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def record_run(
    session: Session, trial_id: int, run_id: int, task_id: str, allocation_id: str, now: datetime
) -> None:
    session.add(
        models.TrialRun(
            trial_id=trial_id,
            run_id=run_id,
            task_id=task_id,
            allocation_id=allocation_id,
            exit_handled=False,
            created_at=now,
        )
    )


# ---- rebuilding after a restart ------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRun:
    task_id: str
    allocation_id: str
    run_id: int
    exit_handled: bool
    ended: bool
    exit_code: int | None
    exit_reason: str | None


@dataclass(frozen=True)
class StoredTrial:
    id: int
    request_id: str
    state: str
    restarts: int
    run_id: int
    early_exit: str | None
    last_run: StoredRun | None


@dataclass(frozen=True)
class StoredExperiment:
    id: int
    owner_id: int
    state: str
    state_reason: str | None
    config: dict[str, Any]
    checkpoint_storage: dict[str, Any]
    searcher_state: dict[str, Any] | None
    trials: list[StoredTrial]


def load_unfinished(session: Session, only: int | None = None) -> list[StoredExperiment]:
    """Every experiment not yet terminal (or only experiment ``only``, if it is not), with
    its trials and the unfinished ones' last runs."""
    query = select(models.Experiment).where(
        models.Experiment.state.not_in([s.value for s in EXPERIMENT_TERMINAL])
    )
    if only is not None:
        query = query.where(models.Experiment.id == only)
    experiments = session.scalars(query.order_by(models.Experiment.id)).all()
    terminal = {s.value for s in TRIAL_TERMINAL}
    out = []
    for experiment in experiments:
        trials = session.scalars(
            select(models.Trial)
            .where(models.Trial.experiment_id == experiment.id)
            .order_by(models.Trial.id)
        ).all()
        stored = [
            StoredTrial(
                id=t.id,
                request_id=t.request_id,
                state=t.state,
                restarts=t.restarts,
                run_id=t.run_id,
                early_exit=t.early_exit,
                last_run=None if t.state in terminal else _last_run(session, t.id),
            )
            for t in trials
        ]
        out.append(
            StoredExperiment(
                id=experiment.id,
                owner_id=experiment.owner_id,
                state=experiment.state,
                state_reason=experiment.state_reason,
                config=experiment.config,
                checkpoint_storage=experiment.checkpoint_storage,
                searcher_state=experiment.searcher_state,
                trials=stored,
            )
        )
    return out


def _last_run(session: Session, trial_id: int) -> StoredRun | None:
    row = session.execute(
        select(models.TrialRun, models.Allocation)
        .outerjoin(models.Allocation, models.Allocation.id == models.TrialRun.allocation_id)
        .where(models.TrialRun.trial_id == trial_id)
        .order_by(models.TrialRun.run_id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    run, allocation = row
    return StoredRun(
        task_id=run.task_id,
        allocation_id=run.allocation_id,
        run_id=run.run_id,
        exit_handled=run.exit_handled,
        ended=allocation is None or allocation.ended_at is not None,
        exit_code=allocation.exit_code if allocation is not None else None,
        exit_reason=(allocation.exit_reason if allocation is not None else None)
        or "the run's allocation is gone",
    )
