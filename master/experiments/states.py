"""Experiment and trial states (Determined's names) and the pure rules that move between them.

Nothing here does I/O: the engine asks these functions what a trial's exit means and what state
an experiment is in once its trials and its searcher have moved, then stores and acts on the
answer. That keeps every decision testable without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ExperimentState(StrEnum):
    ACTIVE = "STATE_ACTIVE"
    PAUSED = "STATE_PAUSED"
    STOPPING_COMPLETED = "STATE_STOPPING_COMPLETED"
    STOPPING_CANCELED = "STATE_STOPPING_CANCELED"
    STOPPING_ERROR = "STATE_STOPPING_ERROR"
    COMPLETED = "STATE_COMPLETED"
    CANCELED = "STATE_CANCELED"
    ERROR = "STATE_ERROR"


class TrialState(StrEnum):
    ACTIVE = "STATE_ACTIVE"
    PAUSED = "STATE_PAUSED"
    STOPPING_CANCELED = "STATE_STOPPING_CANCELED"
    STOPPING_ERROR = "STATE_STOPPING_ERROR"
    COMPLETED = "STATE_COMPLETED"
    CANCELED = "STATE_CANCELED"
    ERROR = "STATE_ERROR"


EXPERIMENT_TERMINAL = frozenset(
    {ExperimentState.COMPLETED, ExperimentState.CANCELED, ExperimentState.ERROR}
)
EXPERIMENT_STOPPING = {
    ExperimentState.STOPPING_COMPLETED: ExperimentState.COMPLETED,
    ExperimentState.STOPPING_CANCELED: ExperimentState.CANCELED,
    ExperimentState.STOPPING_ERROR: ExperimentState.ERROR,
}
TRIAL_TERMINAL = frozenset({TrialState.COMPLETED, TrialState.CANCELED, TrialState.ERROR})
TRIAL_STOPPING = {
    TrialState.STOPPING_CANCELED: TrialState.CANCELED,
    TrialState.STOPPING_ERROR: TrialState.ERROR,
}

# Why a trial ended early, as Determined's searcher events name it.
EXITED_ERRORED = "EXITED_REASON_ERRORED"
EXITED_USER_CANCELED = "EXITED_REASON_USER_CANCELED"
EXITED_INVALID_HP = "EXITED_REASON_INVALID_HP"
EXITED_USER_REQUESTED_STOP = "EXITED_REASON_USER_REQUESTED_STOP"
EARLY_EXIT_REASONS = frozenset(
    {EXITED_INVALID_HP, EXITED_USER_REQUESTED_STOP, "EXITED_REASON_INIT_INVALID_HP"}
)


class Outcome(StrEnum):
    """What a trial run's end means for the trial."""

    STOPPED = "stopped"  # it was being stopped: its stopping state becomes terminal
    PAUSED = "paused"  # the experiment is paused: wait for activate
    RESUME = "resume"  # preempted by the scheduler (or activated while pausing): run again
    CLOSED = "closed"  # finished what the searcher asked: completed
    EXITED_EARLY = "exited_early"  # the harness said why it stopped: completed, searcher told
    RESTART = "restart"  # crashed, restarts left: run again from the latest checkpoint
    FAILED = "failed"  # crashed for good: error, searcher told


@dataclass(frozen=True)
class RunEnd:
    """Everything the decision depends on, gathered by the engine."""

    trial_state: TrialState
    exit_code: int | None
    reason: str
    preempted: bool  # the run was asked to checkpoint and exit (pause, scheduler preemption)
    killed: bool  # the engine killed it without meaning to stop the trial (preemption timeout)
    early_exit: str | None  # EXITED_REASON_… the harness reported before exiting
    has_pending_ops: bool
    closed: bool  # the searcher closed this trial, or the search is over
    restarts: int
    max_restarts: int
    rejected: bool = False  # the scheduler can never place it
    # Its instance was reclaimed by the cloud (spot): an interruption, whatever the exit.
    interrupted: bool = False


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    state: TrialState
    reason: str | None = None
    restarts: int = 0
    searcher_exit: str | None = None  # reason for on_trial_exited_early, if the searcher hears


def decide_run_end(end: RunEnd) -> Decision:
    """What a trial's run ending means: its next state, why, and what the searcher hears.

    Like Determined: a stopping trial becomes terminal whatever the exit; a clean exit after
    the searcher's last operation completes it; an exit the master asked for (pause,
    preemption, a spot instance reclaimed by its cloud) is no failure and never spends
    ``max_restarts``; anything else is a crash, retried from the latest checkpoint
    until ``max_restarts`` is spent."""
    if end.trial_state in TRIAL_STOPPING:
        state = TRIAL_STOPPING[end.trial_state]
        return Decision(Outcome.STOPPED, state, end.reason, end.restarts)
    clean = end.exit_code == 0
    if clean and not end.has_pending_ops and end.closed:
        return Decision(Outcome.CLOSED, TrialState.COMPLETED, None, end.restarts)
    if clean and end.early_exit is not None:
        reason = f"trial exited early with reason {end.early_exit}"
        return Decision(
            Outcome.EXITED_EARLY, TrialState.COMPLETED, reason, end.restarts, end.early_exit
        )
    interrupted = end.killed or end.interrupted or (end.preempted and clean)
    paused = end.trial_state == TrialState.PAUSED
    if interrupted or (paused and clean):
        outcome = Outcome.PAUSED if paused else Outcome.RESUME
        return Decision(outcome, end.trial_state, None, end.restarts)
    if clean and not end.has_pending_ops:
        reason = "trial exited before the searcher closed it"
        return Decision(
            Outcome.EXITED_EARLY,
            TrialState.COMPLETED,
            reason,
            end.restarts,
            EXITED_USER_REQUESTED_STOP,
        )
    if end.rejected:
        return Decision(Outcome.FAILED, TrialState.ERROR, end.reason, end.restarts, EXITED_ERRORED)
    why = end.reason
    if clean:
        why = "exited with code 0 before completing its searcher operations"
    restarts = end.restarts + 1
    if restarts > end.max_restarts:
        reason = f"trial exceeded max_restarts ({end.max_restarts}); last failure: {why}"
        return Decision(Outcome.FAILED, TrialState.ERROR, reason, restarts, EXITED_ERRORED)
    return Decision(Outcome.RESTART, end.trial_state, why, restarts)


def settle_experiment(
    state: ExperimentState,
    trial_states: list[TrialState],
    shutdown: bool,
    failure: bool,
) -> ExperimentState:
    """The experiment's state once its trials and searcher have moved.

    A finished search stops the experiment (an error if the searcher failed it); a stopping
    experiment becomes terminal when no trial is left running. An active search whose trials
    have all ended but whose searcher never said it was over can make no more progress: it ends
    too, completed if any trial completed, in error otherwise."""
    if state in EXPERIMENT_TERMINAL:
        return state
    live = [s for s in trial_states if s not in TRIAL_TERMINAL]
    if state in (ExperimentState.ACTIVE, ExperimentState.PAUSED) and shutdown:
        state = ExperimentState.STOPPING_ERROR if failure else ExperimentState.STOPPING_COMPLETED
    if state == ExperimentState.ACTIVE and not live:
        completed = TrialState.COMPLETED in trial_states or not trial_states
        state = ExperimentState.STOPPING_COMPLETED if completed else ExperimentState.STOPPING_ERROR
    if state in EXPERIMENT_STOPPING and not live:
        return EXPERIMENT_STOPPING[state]
    return state


def can_pause(state: ExperimentState) -> bool:
    return state in (ExperimentState.ACTIVE, ExperimentState.PAUSED)


def can_activate(state: ExperimentState) -> bool:
    return state in (ExperimentState.ACTIVE, ExperimentState.PAUSED)
