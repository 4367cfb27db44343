"""Rebuilding an unfinished experiment after a master restart (pure: the engine acts on it).

Each trial is matched with what became of its last run while the master was away:

- still alive in the scheduler (its agent kept running it): re-attached; asked again to stop if
  the trial is being paused or stopped (signals and kills live in memory only);
- ended, but the engine never handled the end: the end is replayed as the exit it was;
- none, and the trial should run: launched again.

Runs the scheduler knows but the database does not (the master stopped between submitting a run
and recording it) are recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from harness.experiment_config import ExperimentConfig
from master.experiments.launch import TASK_TYPE
from master.experiments.live import LiveExperiment, LiveTrial, RunExited
from master.experiments.plan import Plan
from master.experiments.search import SearchRun
from master.experiments.states import TRIAL_STOPPING, ExperimentState, TrialState
from master.experiments.store import StoredExperiment
from master.scheduler.state import Allocation


@dataclass(frozen=True)
class RunToRecord:
    trial_id: int
    run_id: int
    task_id: str
    allocation_id: str


@dataclass
class Restored:
    experiment: LiveExperiment
    plan: Plan
    record: list[RunToRecord] = field(default_factory=list)
    replay: list[RunExited] = field(default_factory=list)


def restore(
    stored: StoredExperiment,
    config: ExperimentConfig,
    search: SearchRun,
    allocations: Iterable[Allocation],
    now: datetime,
) -> Restored:
    experiment = LiveExperiment(
        id=stored.id,
        owner_id=stored.owner_id,
        state=ExperimentState(stored.state),
        reason=stored.state_reason,
        config=config,
        checkpoint_storage=stored.checkpoint_storage,
        search=search,
    )
    alive_by_trial = {
        a.env.get("DET_TRIAL_ID"): a
        for a in allocations
        if a.task_type == TASK_TYPE and a.env.get("DET_EXPERIMENT_ID") == str(stored.id)
    }
    restored = Restored(experiment, Plan(experiment, now))
    plan = restored.plan
    for row in stored.trials:
        trial = LiveTrial(
            id=row.id,
            request_id=row.request_id,
            state=TrialState(row.state),
            restarts=row.restarts,
            run_id=row.run_id,
            early_exit=row.early_exit,
        )
        experiment.trials[trial.id] = trial
        if trial.terminal:
            continue
        alive = alive_by_trial.get(str(trial.id))
        last = row.last_run
        if alive is not None:
            trial.task_id, trial.allocation_id = alive.task_id, alive.id
            if last is None or last.task_id != alive.task_id:
                run_id = int(alive.env.get("DET_TRIAL_RUN_ID", trial.run_id))
                restored.record.append(RunToRecord(trial.id, run_id, alive.task_id, alive.id))
            if trial.state == TrialState.PAUSED:
                plan.preempts.append(alive.id)
            elif trial.state in TRIAL_STOPPING:
                reason = stored.state_reason or "the trial is being stopped"
                plan.kills.append((alive.task_id, reason))
        elif last is not None and not last.exit_handled:
            trial.task_id, trial.allocation_id = last.task_id, last.allocation_id
            if last.ended:
                reason = last.exit_reason or ""
                restored.replay.append(
                    RunExited(
                        trial_id=trial.id,
                        task_id=last.task_id,
                        allocation_id=last.allocation_id,
                        exit_code=last.exit_code,
                        reason=reason,
                        rejected=reason.startswith("rejected:"),
                    )
                )
        elif trial.state == TrialState.ACTIVE and experiment.state == ExperimentState.ACTIVE:
            plan.launches.append(trial)
    return restored
