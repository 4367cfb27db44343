"""The pure rules of experiments: what a trial run's end means, and where an experiment stands."""

from __future__ import annotations

import pytest

from master.api.paging import page
from master.experiments.states import (
    EXITED_ERRORED,
    EXITED_INVALID_HP,
    EXITED_USER_REQUESTED_STOP,
    ExperimentState,
    Outcome,
    RunEnd,
    TrialState,
    decide_run_end,
    settle_experiment,
)


def end(**overrides: object) -> RunEnd:
    values: dict[str, object] = {
        "trial_state": TrialState.ACTIVE,
        "exit_code": 0,
        "reason": "exited with code 0",
        "preempted": False,
        "killed": False,
        "early_exit": None,
        "has_pending_ops": False,
        "closed": True,
        "restarts": 0,
        "max_restarts": 2,
    }
    values.update(overrides)
    return RunEnd(**values)  # type: ignore[arg-type]


def test_a_clean_exit_after_the_last_operation_completes_the_trial() -> None:
    decision = decide_run_end(end())
    assert (decision.outcome, decision.state, decision.searcher_exit) == (
        Outcome.CLOSED,
        TrialState.COMPLETED,
        None,
    )


def test_a_crash_restarts_until_max_restarts_then_errors_with_the_reason() -> None:
    crash = {"exit_code": 3, "reason": "exited with code 3", "has_pending_ops": True}
    first = decide_run_end(end(**crash))
    assert (first.outcome, first.state, first.restarts) == (Outcome.RESTART, TrialState.ACTIVE, 1)
    last = decide_run_end(end(**crash, restarts=2))
    assert (last.outcome, last.state, last.restarts) == (Outcome.FAILED, TrialState.ERROR, 3)
    assert last.reason == "trial exceeded max_restarts (2); last failure: exited with code 3"
    assert last.searcher_exit == EXITED_ERRORED


def test_a_clean_exit_with_work_left_is_a_failure() -> None:
    decision = decide_run_end(end(has_pending_ops=True, closed=False))
    assert decision.outcome == Outcome.RESTART
    assert decision.reason == "exited with code 0 before completing its searcher operations"


def test_exits_the_master_asked_for_are_no_failures() -> None:
    preempted = decide_run_end(end(preempted=True, has_pending_ops=True, closed=False))
    assert (preempted.outcome, preempted.restarts) == (Outcome.RESUME, 0)
    killed = decide_run_end(end(killed=True, exit_code=137, has_pending_ops=True))
    assert killed.outcome == Outcome.RESUME
    paused = decide_run_end(end(trial_state=TrialState.PAUSED, has_pending_ops=True))
    assert (paused.outcome, paused.state) == (Outcome.PAUSED, TrialState.PAUSED)
    # …but crashing while being asked to stop still counts.
    crashed = decide_run_end(end(preempted=True, exit_code=1, has_pending_ops=True))
    assert crashed.outcome == Outcome.RESTART


def test_early_exits_complete_the_trial_and_tell_the_searcher_why() -> None:
    invalid = decide_run_end(end(early_exit=EXITED_INVALID_HP, has_pending_ops=True))
    assert (invalid.state, invalid.searcher_exit) == (TrialState.COMPLETED, EXITED_INVALID_HP)
    unasked = decide_run_end(end(closed=False))
    assert (unasked.state, unasked.searcher_exit) == (
        TrialState.COMPLETED,
        EXITED_USER_REQUESTED_STOP,
    )


def test_stopping_trials_end_as_their_stopping_state_says() -> None:
    canceled = decide_run_end(end(trial_state=TrialState.STOPPING_CANCELED, exit_code=-9))
    assert (canceled.outcome, canceled.state) == (Outcome.STOPPED, TrialState.CANCELED)
    errored = decide_run_end(end(trial_state=TrialState.STOPPING_ERROR, exit_code=-9))
    assert errored.state == TrialState.ERROR


def test_a_run_that_can_never_be_placed_errors_without_restarts() -> None:
    decision = decide_run_end(
        end(exit_code=None, reason="rejected: too big", rejected=True, has_pending_ops=True)
    )
    assert (decision.state, decision.restarts, decision.reason) == (
        TrialState.ERROR,
        0,
        "rejected: too big",
    )


@pytest.mark.parametrize(
    ("state", "trials", "shutdown", "failure", "expected"),
    [
        (ExperimentState.ACTIVE, [TrialState.ACTIVE], False, False, ExperimentState.ACTIVE),
        (
            ExperimentState.ACTIVE,
            [TrialState.ACTIVE],
            True,
            False,
            ExperimentState.STOPPING_COMPLETED,
        ),
        (ExperimentState.ACTIVE, [TrialState.COMPLETED], True, False, ExperimentState.COMPLETED),
        (ExperimentState.ACTIVE, [TrialState.ERROR], True, True, ExperimentState.ERROR),
        (ExperimentState.PAUSED, [TrialState.PAUSED], False, False, ExperimentState.PAUSED),
        (
            ExperimentState.STOPPING_CANCELED,
            [TrialState.STOPPING_CANCELED],
            False,
            False,
            ExperimentState.STOPPING_CANCELED,
        ),
        (
            ExperimentState.STOPPING_CANCELED,
            [TrialState.CANCELED, TrialState.COMPLETED],
            False,
            False,
            ExperimentState.CANCELED,
        ),
        # A search with nothing left running that never said it is over cannot go on.
        (ExperimentState.ACTIVE, [TrialState.COMPLETED], False, False, ExperimentState.COMPLETED),
        (ExperimentState.ACTIVE, [TrialState.ERROR], False, False, ExperimentState.ERROR),
        (ExperimentState.COMPLETED, [TrialState.ACTIVE], False, False, ExperimentState.COMPLETED),
    ],
)
def test_settle_experiment(
    state: ExperimentState,
    trials: list[TrialState],
    shutdown: bool,
    failure: bool,
    expected: ExperimentState,
) -> None:
    assert settle_experiment(state, trials, shutdown, failure) == expected


def test_paging_follows_determined() -> None:
    assert page(0, 0, 250, default_limit=100).pagination == {
        "offset": 0,
        "limit": 100,
        "startIndex": 0,
        "endIndex": 100,
        "total": 250,
    }
    last = page(200, 100, 250)
    assert (last.start, last.count, last.pagination["endIndex"]) == (200, 50, 250)
    assert page(-10, 0, 250).start == 240
    assert page(0, -1, 250).count == 250
    assert page(0, -2, 250).count == 0
    assert page(500, 10, 250).pagination["startIndex"] == 250


def test_a_run_whose_spot_instance_was_reclaimed_never_spends_max_restarts() -> None:
    """Its agent vanished with the instance (no exit code) after the trial was asked to
    checkpoint: an interruption, even with max_restarts already spent."""
    gone = {"exit_code": None, "reason": "agent 'i-1' is gone", "has_pending_ops": True}
    decision = decide_run_end(end(**gone, preempted=True, interrupted=True, restarts=2))
    assert (decision.outcome, decision.state, decision.restarts) == (
        Outcome.RESUME,
        TrialState.ACTIVE,
        2,
    )
    # The same end without the notice is a crash.
    assert decide_run_end(end(**gone, preempted=True, restarts=2)).outcome == Outcome.FAILED
