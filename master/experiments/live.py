"""What the experiment engine holds in memory, and the events that change it.

Only the engine's loop mutates these objects; REST handlers on the event loop may read them
between events (the searcher operation a trial should run next, which allocation a trial runs).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from harness.experiment_config import ExperimentConfig
from master.experiments.search import SearchRun
from master.experiments.states import TRIAL_TERMINAL, ExperimentState, TrialState


@dataclass
class LiveTrial:
    id: int
    request_id: str
    state: TrialState
    restarts: int
    run_id: int
    early_exit: str | None = None
    # The run in flight, if any: its TRIAL task and allocation.
    task_id: str | None = None
    allocation_id: str | None = None
    # The engine killed the run without meaning to stop the trial (preemption timeout).
    killed: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in TRIAL_TERMINAL


@dataclass
class LiveExperiment:
    id: int
    owner_id: int
    state: ExperimentState
    reason: str | None
    config: ExperimentConfig
    checkpoint_storage: dict[str, Any]
    search: SearchRun
    trials: dict[int, LiveTrial] = field(default_factory=dict)
    # Why the last trial failed for good: the experiment's reason if it ends in error.
    last_failure: str | None = None
    # The progress last stored with the search's snapshot (Plan.fold): a trial's progress
    # report stores them again only once the progress has moved by Plan's PROGRESS_STEP.
    progress_stored: float = -1.0

    def by_request(self, request_id: str) -> LiveTrial | None:
        return next((t for t in self.trials.values() if t.request_id == request_id), None)


class EngineError(Exception):
    """A request the engine refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---- events ---------------------------------------------------------------------------------


@dataclass
class Event:
    reply: asyncio.Future[Any] | None = field(default=None, kw_only=True)


@dataclass
class CreateExperiment(Event):
    owner_id: int
    config: ExperimentConfig
    original_config: str
    checkpoint_storage: dict[str, Any]
    files: dict[str, str]
    model_definition_size: int
    activate: bool


@dataclass
class ExperimentAction(Event):
    experiment_id: int
    action: Literal["pause", "activate", "kill"]
    by: str


@dataclass
class ContinueExperiment(Event):
    """Reopen an ended single-trial experiment under ``config`` (``continuing``)."""

    experiment_id: int
    config: ExperimentConfig
    renamed: dict[str, str]
    by: str


@dataclass
class KillTrial(Event):
    trial_id: int
    by: str


@dataclass
class ValidationCompleted(Event):
    trial_id: int
    length: int
    metric: float
    key: str | None = None  # the report's idempotency key: applied once per trial


@dataclass
class TrialProgress(Event):
    """A running trial's reported progress, ``fraction`` (0..1) of its planned length."""

    trial_id: int
    fraction: float


@dataclass
class EarlyExit(Event):
    trial_id: int
    reason: str
    key: str | None = None  # the report's idempotency key: applied once per trial


@dataclass
class RunExited(Event):
    trial_id: int
    task_id: str
    allocation_id: str
    exit_code: int | None
    reason: str
    rejected: bool = False
    interrupted: bool = False  # the cloud took its machine back (spot preemption)


@dataclass
class LaunchFailed(Event):
    trial_id: int
    reason: str


@dataclass
class PreemptRun(Event):
    """The scheduler wants this run's slots: ask it to checkpoint and exit, then run again."""

    allocation_id: str
    reason: str = "the scheduler needs these slots"
    # Kill the run at this time if it has not exited (a spot instance's end); None: only the
    # experiment's preemption_timeout applies.
    deadline: datetime | None = None


@dataclass
class PreemptionDeadline(Event):
    allocation_id: str
