"""The experiment state machine without a cluster: a search (``SearchRun``) and a ``Plan`` per
event, as the engine drives them, with a tiny scripted searcher and with the real ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from harness.experiment_config import ExperimentConfig, parse_experiment_config
from master.experiments.live import EngineError, LiveExperiment, LiveTrial
from master.experiments.plan import Plan
from master.experiments.search import SearchError, SearchRun
from master.experiments.states import ExperimentState, TrialState
from master.searcher import Close, Create, Searcher, Shutdown, ValidateAfter

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class ScriptedSearcher:
    """One trial, two validations; fails the search if the trial exits early."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.events = events or []

    def initial_operations(self) -> list[Any]:
        self.events.append("initial")
        return [Create("r1", {"x": 1})]

    def on_trial_created(self, request_id: str) -> list[Any]:
        self.events.append(f"created {request_id}")
        return [ValidateAfter(request_id, 2)]

    def on_validation_completed(self, request_id: str, metric: float, length: int) -> list[Any]:
        self.events.append(f"validated {request_id} {length}")
        if length < 4:
            return [ValidateAfter(request_id, 4)]
        return [Close(request_id), Shutdown()]

    def on_trial_exited_early(self, request_id: str, reason: str) -> list[Any]:
        self.events.append(f"exited {request_id} {reason}")
        return [Shutdown(failure=True)]

    def on_trial_closed(self, request_id: str) -> list[Any]:
        self.events.append(f"closed {request_id}")
        return []

    def on_trial_progress(self, request_id: str, fraction: float) -> None:
        self.events.append(f"progress {request_id} {fraction}")

    def progress(self) -> float:
        return 0.5

    def snapshot(self) -> dict[str, Any]:
        return {"events": list(self.events)}


class ScriptedFactory:
    def create(self, config: ExperimentConfig, seed: int) -> ScriptedSearcher:
        return ScriptedSearcher()

    def restore(self, config: ExperimentConfig, snapshot: dict[str, Any]) -> ScriptedSearcher:
        return ScriptedSearcher(list(snapshot["events"]))


def make_config(**fields: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "entrypoint": "python train.py",
        "searcher": {"name": "single", "metric": "loss", "max_length": {"batches": 4}},
        "max_restarts": 1,
    }
    raw.update(fields)
    return parse_experiment_config(raw)


def start(config: ExperimentConfig | None = None) -> LiveExperiment:
    run, effects = SearchRun.start(ScriptedSearcher())
    experiment = LiveExperiment(
        id=1,
        owner_id=1,
        state=ExperimentState.ACTIVE,
        reason=None,
        config=config or make_config(),
        checkpoint_storage={},
        search=run,
    )
    for number, new in enumerate(effects.creates, start=1):
        experiment.trials[number] = LiveTrial(number, new.request_id, TrialState.ACTIVE, 0, 0)
    return experiment


def events(experiment: LiveExperiment) -> list[str]:
    searcher = experiment.search.searcher
    assert isinstance(searcher, ScriptedSearcher)
    return searcher.events


def running(trial: LiveTrial, run: int = 1) -> LiveTrial:
    trial.task_id, trial.allocation_id = f"task-{run}", f"task-{run}.1"
    return trial


def plan(experiment: LiveExperiment) -> Plan:
    return Plan(experiment, NOW)


def finish(p: Plan) -> Plan:
    p.settle()
    return p


# ---- the search ---------------------------------------------------------------------------------


def test_search_serves_operations_in_order_and_refuses_others() -> None:
    run, effects = SearchRun.start(ScriptedSearcher())
    assert [c.request_id for c in effects.creates] == ["r1"]
    assert run.current("r1") == (2, False)
    with pytest.raises(SearchError, match="expected 2"):
        run.validation_completed("r1", 0.5, 4)
    run.validation_completed("r1", 0.5, 2)
    assert run.current("r1") == (4, False)
    assert run.validation_completed("r1", 0.5, 2).creates == []  # a retried report: no-op
    done = run.validation_completed("r1", 0.4, 4)
    assert done.shutdown and run.shutdown and not run.failure
    assert run.current("r1") == (None, True)
    assert run.is_closed("r1") and not run.has_pending("r1")


def test_search_snapshot_restores_exactly() -> None:
    run, _ = SearchRun.start(ScriptedSearcher())
    run.validation_completed("r1", 0.5, 2)
    snapshot = json.loads(json.dumps(run.snapshot()))
    restored = SearchRun.restore(ScriptedFactory(), make_config(), snapshot)
    assert restored.current("r1") == (4, False)
    assert restored.snapshot() == run.snapshot()


@pytest.mark.parametrize(
    ("searcher", "hyperparameters", "trials"),
    [
        ({"name": "single"}, {"x": 1}, 1),
        ({"name": "grid"}, {"x": {"type": "categorical", "vals": [1, 2, 3]}}, 3),
        ({"name": "random", "max_trials": 2}, {"x": {"type": "int", "minval": 1, "maxval": 9}}, 2),
    ],
)
def test_real_searchers_run_to_shutdown(
    searcher: dict[str, Any], hyperparameters: dict[str, Any], trials: int
) -> None:
    config = make_config(
        searcher={"metric": "loss", "max_length": {"batches": 5}, **searcher},
        hyperparameters=hyperparameters,
    )
    run, effects = SearchRun.start(Searcher(config, 7))
    created = list(effects.creates)
    assert len(created) == trials
    for new in created:
        length, completed = run.current(new.request_id)
        assert (length, completed) == (5, False)
        run.validation_completed(new.request_id, 1.0, 5)
        assert run.current(new.request_id) == (None, True)
        run.trial_closed(new.request_id)
    assert run.shutdown and not run.failure and run.progress() == 1.0


# ---- the plan ------------------------------------------------------------------------------------


def test_a_trial_validates_twice_and_the_experiment_completes() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    finish(plan(experiment)).validation_completed(trial, 0.5, 2)
    p = plan(experiment)
    p.validation_completed(trial, 0.4, 4)
    p.settle()
    assert experiment.state == ExperimentState.STOPPING_COMPLETED
    assert p.change.experiment["searcher_state"]["searcher"]["events"][-1] == "validated r1 4"
    p = plan(experiment)
    p.run_ended(trial, 0, "exited with code 0", preempted=False, rejected=False)
    p.settle()
    assert trial.state == TrialState.COMPLETED
    assert experiment.state == ExperimentState.COMPLETED
    assert p.change.experiment["state"] == "STATE_COMPLETED"
    assert p.change.experiment["progress"] == 1.0
    assert p.collect
    assert events(experiment)[-1] == "closed r1"


def test_a_crash_restarts_then_fails_the_experiment_with_the_reason() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    p = finish(plan(experiment))
    p.run_ended(trial, 1, "exited with code 1", preempted=False, rejected=False)
    p.settle()
    assert (trial.state, trial.restarts) == (TrialState.ACTIVE, 1)
    assert p.launches == [trial]
    running(trial, 2)
    p = plan(experiment)
    p.run_ended(trial, 1, "exited with code 1", preempted=False, rejected=False)
    p.settle()
    assert trial.state == TrialState.ERROR
    assert experiment.state == ExperimentState.ERROR
    assert experiment.reason == (
        "trial 1 failed: trial exceeded max_restarts (1); last failure: exited with code 1"
    )
    assert p.change.trials[1]["state_reason"].startswith("trial exceeded max_restarts")
    assert "exited r1 EXITED_REASON_ERRORED" in events(experiment)


def test_a_run_whose_machine_was_taken_back_runs_again_without_spending_a_restart() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    reason = "agent 'vm-1': its instance was preempted by GCP"
    for run in (2, 3):  # more interruptions than max_restarts (1) allows crashes
        p = finish(plan(experiment))
        p.run_ended(trial, None, reason, preempted=False, rejected=False, interrupted=True)
        p.settle()
        assert (trial.state, trial.restarts) == (TrialState.ACTIVE, 0)
        assert p.launches == [trial]
        running(trial, run)
    assert experiment.state == ExperimentState.ACTIVE


def test_pause_asks_running_trials_to_stop_and_activate_relaunches() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    p = plan(experiment)
    p.pause(queued=lambda allocation_id: False)
    p.settle()
    assert experiment.state == ExperimentState.PAUSED
    assert trial.state == TrialState.PAUSED
    assert p.preempts == ["task-1.1"] and p.kills == []
    p = plan(experiment)
    p.run_ended(trial, 0, "exited with code 0", preempted=True, rejected=False)
    p.settle()
    assert (trial.state, trial.restarts, p.launches) == (TrialState.PAUSED, 0, [])
    with pytest.raises(EngineError, match="only STATE_ACTIVE experiments can be paused"):
        experiment.state = ExperimentState.STOPPING_CANCELED
        plan(experiment).pause(queued=lambda allocation_id: False)
    experiment.state = ExperimentState.PAUSED
    p = plan(experiment)
    p.activate()
    p.settle()
    assert experiment.state == ExperimentState.ACTIVE
    assert trial.state == TrialState.ACTIVE and p.launches == [trial]


def test_pause_drops_a_run_that_has_not_started() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    p = plan(experiment)
    p.pause(queued=lambda allocation_id: True)
    assert p.kills == [("task-1", "the experiment was paused before the run began")]
    p = plan(experiment)
    p.run_ended(trial, None, "killed", preempted=False, rejected=False)
    assert (trial.state, trial.restarts) == (TrialState.PAUSED, 0)


def test_kill_stops_running_trials_and_cancels_when_they_are_gone() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    p = plan(experiment)
    p.kill("killed by admin")
    p.settle()
    assert experiment.state == ExperimentState.STOPPING_CANCELED
    assert trial.state == TrialState.STOPPING_CANCELED
    assert p.kills == [("task-1", "killed by admin")]
    p = plan(experiment)
    p.run_ended(trial, -9, "killed by admin", preempted=False, rejected=False)
    p.settle()
    assert trial.state == TrialState.CANCELED
    assert experiment.state == ExperimentState.CANCELED
    assert experiment.reason == "killed by admin"
    # The searcher is not told about trials of a canceled search.
    assert not any(e.startswith("exited") for e in events(experiment))


def test_killing_one_trial_tells_the_searcher() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    p = plan(experiment)
    p.kill_trial(trial, "killed by admin")
    p.settle()
    assert trial.state == TrialState.STOPPING_CANCELED
    p = plan(experiment)
    p.run_ended(trial, -9, "killed by admin", preempted=False, rejected=False)
    p.settle()
    assert trial.state == TrialState.CANCELED
    seen = events(experiment)
    assert "exited r1 EXITED_REASON_USER_CANCELED" in seen
    # The scripted searcher fails the search when its only trial is gone.
    assert experiment.state == ExperimentState.ERROR


def test_early_exit_reasons_are_checked() -> None:
    experiment = start()
    trial = running(experiment.trials[1])
    with pytest.raises(EngineError, match="reason: 'BORED' is not one of"):
        plan(experiment).early_exit(trial, "BORED")
    p = plan(experiment)
    p.early_exit(trial, "EXITED_REASON_INVALID_HP")
    assert p.change.trials[1] == {"early_exit": "EXITED_REASON_INVALID_HP"}
    p = plan(experiment)
    p.run_ended(trial, 0, "exited with code 0", preempted=False, rejected=False)
    p.settle()
    assert trial.state == TrialState.COMPLETED
    assert "exited r1 EXITED_REASON_INVALID_HP" in events(experiment)


# ---- restoring after a master restart ------------------------------------------------------------


def test_restore_reattaches_replays_and_relaunches() -> None:
    from master.experiments.restore import restore
    from master.experiments.store import StoredExperiment, StoredRun, StoredTrial
    from master.scheduler.state import Allocation

    def run(task: str, handled: bool, ended: bool) -> StoredRun:
        return StoredRun(task, f"{task}.1", 1, handled, ended, 1 if ended else None, "boom")

    def trial(number: int, state: str = "STATE_ACTIVE", last: StoredRun | None = None) -> Any:
        return StoredTrial(number, f"r{number}", state, 0, 1 if last else 0, None, last)

    stored = StoredExperiment(
        id=5,
        owner_id=1,
        state="STATE_ACTIVE",
        state_reason=None,
        config={},
        checkpoint_storage={},
        searcher_state={},
        trials=[
            trial(1, last=run("t1", handled=False, ended=False)),  # alive on its agent
            trial(2, last=run("t2", handled=False, ended=True)),  # ended while we were away
            trial(3, last=run("t3", handled=True, ended=True)),  # handled: run it again
            trial(4),  # alive, but its run was never recorded
            trial(6, state="STATE_COMPLETED"),
        ],
    )
    alive = [
        Allocation(
            id=f"{task}.1",
            task_id=task,
            task_type="TRIAL",
            owner="admin",
            pool="default",
            slots=1,
            priority=42,
            submitted_at=NOW,
            argv=[],
            env={"DET_EXPERIMENT_ID": "5", "DET_TRIAL_ID": str(number), "DET_TRIAL_RUN_ID": "1"},
        )
        for number, task in ((1, "t1"), (4, "t4"))
    ]
    search = SearchRun(ScriptedSearcher())
    restored = restore(stored, make_config(), search, alive, NOW)
    trials = restored.experiment.trials
    assert trials[1].allocation_id == "t1.1"
    assert [(r.trial_id, r.task_id) for r in restored.record] == [(4, "t4")]
    assert [(e.trial_id, e.exit_code, e.reason) for e in restored.replay] == [(2, 1, "boom")]
    assert trials[2].allocation_id == "t2.1"  # so the replayed end is taken as its own
    assert restored.plan.launches == [trials[3]]
    assert trials[6].terminal


# ---- progress while trials train ---------------------------------------------------------------


def test_a_trials_reported_progress_moves_the_experiments_progress() -> None:
    from master.searcher import Searcher

    config = make_config(
        searcher={"name": "single", "metric": "loss", "max_length": {"batches": 230}}
    )
    run, effects = SearchRun.start(Searcher(config, seed=1))
    experiment = LiveExperiment(
        id=1,
        owner_id=1,
        state=ExperimentState.ACTIVE,
        reason=None,
        config=config,
        checkpoint_storage={},
        search=run,
    )
    trial = running(LiveTrial(1, effects.creates[0].request_id, TrialState.ACTIVE, 0, 0))
    experiment.trials[1] = trial
    p = finish(plan(experiment))
    p.trial_progress(trial, 69 / 230)
    assert p.change.trials[1]["progress"] == pytest.approx(0.3)
    assert p.change.experiment["progress"] == pytest.approx(0.3)
    assert p.change.experiment["searcher_state"] == run.snapshot()
    # Reports that move the experiment less than PROGRESS_STEP write the trial's row only (a
    # report a second per trial); the search is stored again once the sum has moved enough.
    small = plan(experiment)
    small.trial_progress(trial, 69.1 / 230)
    assert small.change.trials[1]["progress"] == pytest.approx(69.1 / 230)
    assert small.change.experiment == {}
    moved = plan(experiment)
    moved.trial_progress(trial, 69.3 / 230)
    assert moved.change.experiment["progress"] == pytest.approx(69.3 / 230)
    assert moved.change.experiment["searcher_state"] == run.snapshot()
    # Once the search is torn down (a stopping experiment) only the trial's row moves.
    experiment.state = ExperimentState.STOPPING_CANCELED
    stopped = plan(experiment)
    stopped.trial_progress(trial, 0.5)
    assert stopped.change.trials[1]["progress"] == 0.5
    assert "progress" not in stopped.change.experiment
