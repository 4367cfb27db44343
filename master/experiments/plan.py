"""What one event does to an experiment, decided in memory (no I/O).

A :class:`Plan` is made per event: its methods move the experiment, its trials and its search
(``states``, ``search``), and record what follows from that — the rows to write (``change``),
runs to launch, kill or preempt, lines for the trials' logs, whether to collect checkpoints. The
engine then writes the rows in one transaction and acts (``engine.ExperimentEngine._execute``).
Keeping the decisions here makes the whole state machine testable without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from master.experiments.live import EngineError, LiveExperiment, LiveTrial
from master.experiments.search import Effects, SearchRun
from master.experiments.states import (
    EARLY_EXIT_REASONS,
    EXITED_ERRORED,
    EXITED_USER_CANCELED,
    EXPERIMENT_STOPPING,
    EXPERIMENT_TERMINAL,
    TRIAL_STOPPING,
    ExperimentState,
    Outcome,
    RunEnd,
    TrialState,
    decide_run_end,
    settle_experiment,
)
from master.experiments.store import Change, NewTrialRow

# What a stopping experiment makes of its running trials.
_TRIAL_STOP = {
    ExperimentState.STOPPING_CANCELED: TrialState.STOPPING_CANCELED,
    ExperimentState.STOPPING_ERROR: TrialState.STOPPING_ERROR,
}
# While the search is alive (or winding down normally) the searcher hears about its trials.
_SEARCHING = (ExperimentState.ACTIVE, ExperimentState.PAUSED, ExperimentState.STOPPING_COMPLETED)


# A trial's progress report (every second per running trial) stores the experiment's progress,
# and the search's snapshot with it, once that progress has moved by this much: at most about
# a thousand such writes per experiment, and a restored search starts from what was stored.
PROGRESS_STEP = 0.001


class Plan:
    def __init__(self, experiment: LiveExperiment, now: datetime) -> None:
        self.experiment = experiment
        self.now = now
        self.change = Change(experiment.id)
        self.launches: list[LiveTrial] = []
        self.kills: list[tuple[str, str]] = []  # task id, reason
        self.preempts: list[str] = []  # allocation ids to ask to checkpoint and exit
        self.deadlines: dict[str, datetime] = {}  # of those, the ones killed at a set time
        self.notes: list[tuple[LiveTrial, str, str]] = []  # trial, text, level
        self.collect = False

    # ---- user actions --------------------------------------------------------------------------

    def _require(self, allowed: set[ExperimentState], verb: str) -> None:
        experiment = self.experiment
        if experiment.state not in allowed:
            names = " or ".join(sorted(s.value for s in allowed))
            raise EngineError(
                409,
                f"experiment {experiment.id} is {experiment.state.value}; only {names} "
                f"experiments can be {verb}",
            )

    def pause(self, queued: Callable[[str], bool]) -> None:
        """Pause: running trials are asked to checkpoint and exit, queued runs are dropped.
        ``queued`` says whether an allocation has not started yet."""
        experiment = self.experiment
        if experiment.state == ExperimentState.PAUSED:
            return
        self._require({ExperimentState.ACTIVE}, "paused")
        self.set_experiment_state(ExperimentState.PAUSED)
        for trial in experiment.trials.values():
            if trial.state != TrialState.ACTIVE:
                continue
            self.set_trial(trial, TrialState.PAUSED)
            if trial.allocation_id is None:
                continue
            if queued(trial.allocation_id):
                trial.killed = True
                assert trial.task_id is not None
                self.kills.append((trial.task_id, "the experiment was paused before the run began"))
            else:
                self.ask_to_stop(trial, "the experiment was paused")

    def ask_to_stop(self, trial: LiveTrial, why: str, deadline: datetime | None = None) -> None:
        assert trial.allocation_id is not None
        self.preempts.append(trial.allocation_id)
        if deadline is not None:
            self.deadlines[trial.allocation_id] = deadline
        self.notes.append((trial, f"{why}: asking the trial to checkpoint and exit", "INFO"))

    def activate(self) -> None:
        """Resume: paused trials run again (from their latest checkpoints)."""
        experiment = self.experiment
        if experiment.state == ExperimentState.ACTIVE:
            return
        self._require({ExperimentState.PAUSED}, "activated")
        self.set_experiment_state(ExperimentState.ACTIVE)
        for trial in experiment.trials.values():
            if trial.state != TrialState.PAUSED:
                continue
            self.set_trial(trial, TrialState.ACTIVE)
            if trial.allocation_id is None:
                self.launches.append(trial)

    def kill(self, reason: str) -> None:
        """Cancel the experiment: ``settle`` stops its trials."""
        experiment = self.experiment
        if experiment.state in (ExperimentState.STOPPING_CANCELED, *EXPERIMENT_TERMINAL):
            return
        experiment.reason = reason
        self.set_experiment_state(ExperimentState.STOPPING_CANCELED)

    def kill_trial(self, trial: LiveTrial, reason: str) -> None:
        if trial.terminal or trial.state in TRIAL_STOPPING:
            return
        if trial.allocation_id is not None:
            self.set_trial(trial, TrialState.STOPPING_CANCELED, reason)
            assert trial.task_id is not None
            self.kills.append((trial.task_id, reason))
            return
        self.end_trial(trial, TrialState.CANCELED, reason)
        self.tell_searcher(lambda s: s.trial_exited_early(trial.request_id, EXITED_USER_CANCELED))

    # ---- what trials report --------------------------------------------------------------------

    def validation_completed(self, trial: LiveTrial, metric: float, length: int) -> None:
        """Raises SearchError for a length the trial was not asked for."""
        experiment = self.experiment
        if experiment.state not in _SEARCHING:
            return
        self.fold(experiment.search.validation_completed(trial.request_id, metric, length))

    def trial_progress(self, trial: LiveTrial, fraction: float) -> None:
        """The trial reported ``fraction`` of its length trained: stored on its row and, while
        the search is alive, counted in the experiment's progress (as Determined's searcher
        progress does), so it moves while trials train, not only when they validate."""
        self.change.trial(trial.id)["progress"] = fraction
        experiment = self.experiment
        if experiment.state in _SEARCHING:
            experiment.search.trial_progress(trial.request_id, fraction)
            moved = experiment.search.progress() - experiment.progress_stored
            if abs(moved) >= PROGRESS_STEP:
                self.fold(Effects())

    def early_exit(self, trial: LiveTrial, reason: str) -> None:
        """The harness is about to exit on purpose; the searcher hears once it has."""
        if reason not in EARLY_EXIT_REASONS:
            allowed = ", ".join(sorted(EARLY_EXIT_REASONS))
            raise EngineError(400, f"reason: {reason!r} is not one of {allowed}")
        trial.early_exit = reason
        self.change.trial(trial.id)["early_exit"] = reason

    def run_ended(
        self,
        trial: LiveTrial,
        exit_code: int | None,
        reason: str,
        *,
        preempted: bool,
        rejected: bool,
        interrupted: bool = False,
    ) -> None:
        """The trial's run ended: decide what that means, then tell the searcher. An
        ``interrupted`` run (its machine was taken back by the cloud) counts as killed without
        meaning to stop the trial: it runs again, and no restart is spent."""
        experiment = self.experiment
        trial.allocation_id = None
        trial.task_id = None
        decision = decide_run_end(
            RunEnd(
                trial_state=trial.state,
                exit_code=exit_code,
                reason=reason,
                preempted=preempted,
                killed=trial.killed or interrupted,
                early_exit=trial.early_exit,
                has_pending_ops=experiment.search.has_pending(trial.request_id),
                closed=experiment.search.is_closed(trial.request_id),
                restarts=trial.restarts,
                max_restarts=experiment.config.max_restarts,
                rejected=rejected,
                interrupted=interrupted,
            )
        )
        trial.killed = False
        if decision.restarts != trial.restarts:
            trial.restarts = decision.restarts
            self.change.trial(trial.id)["restarts"] = trial.restarts
        self._apply(trial, decision.outcome, decision.state, decision.reason)
        request_id = trial.request_id
        if decision.searcher_exit is not None:
            why = decision.searcher_exit
            self.tell_searcher(lambda s: s.trial_exited_early(request_id, why))
        elif decision.outcome == Outcome.CLOSED:
            self.tell_searcher(lambda s: s.trial_closed(request_id))
        elif decision.state == TrialState.CANCELED:
            self.tell_searcher(lambda s: s.trial_exited_early(request_id, EXITED_USER_CANCELED))

    def _apply(
        self, trial: LiveTrial, outcome: Outcome, state: TrialState, reason: str | None
    ) -> None:
        experiment = self.experiment
        if outcome == Outcome.RESTART:
            self.notes.append(
                (
                    trial,
                    f"trial {trial.id} failed ({reason}); restart {trial.restarts} of "
                    f"{experiment.config.max_restarts}",
                    "WARNING",
                )
            )
        if state in (TrialState.COMPLETED, TrialState.CANCELED, TrialState.ERROR):
            if state == TrialState.ERROR:
                experiment.last_failure = f"trial {trial.id} failed: {reason}"
            self.end_trial(trial, state, reason)
            return
        if state != trial.state:
            self.set_trial(trial, state, reason)
        elif reason and outcome == Outcome.RESTART:
            self.change.trial(trial.id)["state_reason"] = reason
        runnable = outcome in (Outcome.RESUME, Outcome.RESTART)
        if runnable and trial.state == TrialState.ACTIVE:
            self.launches.append(trial)

    def launch_failed(self, trial: LiveTrial, reason: str) -> None:
        if trial.terminal:
            return
        self.experiment.last_failure = f"trial {trial.id} failed: {reason}"
        self.end_trial(trial, TrialState.ERROR, reason)
        self.tell_searcher(lambda s: s.trial_exited_early(trial.request_id, EXITED_ERRORED))

    # ---- the searcher --------------------------------------------------------------------------

    def tell_searcher(self, event: Callable[[SearchRun], Effects]) -> None:
        """Tell the searcher (unless the search is being torn down) and fold in its answer."""
        if self.experiment.state in _SEARCHING:
            self.fold(event(self.experiment.search))

    def fold(self, effects: Effects) -> None:
        """New trials to create, and the search's new snapshot and progress to store."""
        experiment = self.experiment
        active = experiment.state == ExperimentState.ACTIVE
        state = TrialState.ACTIVE if active else TrialState.PAUSED
        for new in effects.creates:
            self.change.new_trials.append(NewTrialRow(new.request_id, new.hparams, state.value))
        self.change.experiment["searcher_state"] = experiment.search.snapshot()
        self.change.experiment["progress"] = experiment.progress_stored = (
            experiment.search.progress()
        )

    # ---- states ----------------------------------------------------------------------------------

    def set_experiment_state(self, state: ExperimentState) -> None:
        experiment = self.experiment
        experiment.state = state
        values: dict[str, Any] = self.change.experiment
        values["state"] = state.value
        values["state_reason"] = experiment.reason
        if state in EXPERIMENT_TERMINAL:
            values["end_time"] = self.now
            if state == ExperimentState.COMPLETED:
                values["progress"] = 1.0
            self.collect = True

    def set_trial(self, trial: LiveTrial, state: TrialState, reason: str | None = None) -> None:
        trial.state = state
        values = self.change.trial(trial.id)
        values["state"] = state.value
        if reason is not None:
            values["state_reason"] = reason

    def end_trial(self, trial: LiveTrial, state: TrialState, reason: str | None) -> None:
        self.set_trial(trial, state, reason)
        self.change.trial(trial.id)["end_time"] = self.now
        self.collect = True
        level = "ERROR" if state == TrialState.ERROR else "INFO"
        text = f"trial {trial.id} is {state.value.removeprefix('STATE_').lower()}"
        self.notes.append((trial, f"{text}: {reason}" if reason else text, level))

    def settle(self) -> None:
        """Bring trials in line with a stopping experiment, and the experiment in line with
        its trials and searcher, until neither moves."""
        experiment = self.experiment
        for _ in range(4):
            self._stop_trials()
            states = [t.state for t in experiment.trials.values()]
            states += [TrialState.ACTIVE] * len(self.change.new_trials)
            new = settle_experiment(
                experiment.state, states, experiment.search.shutdown, experiment.search.failure
            )
            if new == experiment.state:
                return
            if new in (ExperimentState.STOPPING_ERROR, ExperimentState.ERROR):
                experiment.reason = (
                    experiment.reason
                    or experiment.last_failure
                    or "the searcher ended the search in failure"
                )
            self.set_experiment_state(new)

    def _stop_trials(self) -> None:
        experiment = self.experiment
        if experiment.state not in EXPERIMENT_STOPPING:
            return
        for trial in experiment.trials.values():
            if trial.terminal:
                continue
            if experiment.state == ExperimentState.STOPPING_COMPLETED:
                # The search is over: runs still going finish their last operation.
                if trial.allocation_id is None:
                    self.end_trial(trial, TrialState.COMPLETED, "the search is over")
                continue
            stopping = _TRIAL_STOP[experiment.state]
            reason = experiment.reason or "the experiment is stopping"
            if trial.allocation_id is None:
                self.end_trial(trial, TRIAL_STOPPING[stopping], reason)
            elif trial.state not in TRIAL_STOPPING:
                self.set_trial(trial, stopping, reason)
                assert trial.task_id is not None
                self.kills.append((trial.task_id, reason))
