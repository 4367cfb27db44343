"""The experiment engine: the one owner of every unfinished experiment's state.

Like the scheduler, a single asyncio task consumes events in order: requests from the REST API
(create, pause, activate, kill, a trial's validation or early exit) and reports from the
scheduler (a trial run ended, the scheduler wants a run's slots). Each event changes memory,
then the database in one transaction (:class:`store.Change`: the searcher's snapshot with the
trial rows it implies), then acts: submits trial runs as TRIAL tasks, kills or preempts them,
collects checkpoints. The decisions themselves are pure (``plan``, ``states``, ``search``).

This module holds that loop: dispatching events to their handlers, turning each into a
:class:`Plan`, carrying the plan out in order (:meth:`ExperimentEngine._execute`), and
rebuilding after a restart. The hands it acts with live apart, each behind a small contract:
starting, signalling and killing a trial's runs in ``runs`` (:class:`TrialRuns`), deleting
checkpoints in ``gc`` (:class:`CheckpointCollector`).

On start it rebuilds from the database: each unfinished experiment's searcher is restored from
its snapshot, runs still alive in the scheduler are re-attached, runs that ended while nobody
was looking are handled as the exits they were, and trials that should run but have no run are
submitted again. So no searcher event is lost across a master restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from harness.experiment_config import ExperimentConfig, SharedFSStorage
from master.experiments import continuing, store
from master.experiments.gc import CheckpointCollector
from master.experiments.launch import TASK_TYPE
from master.experiments.live import (
    ContinueExperiment,
    CreateExperiment,
    EarlyExit,
    EngineError,
    Event,
    ExperimentAction,
    KillTrial,
    LaunchFailed,
    LiveExperiment,
    LiveTrial,
    PreemptionDeadline,
    PreemptRun,
    RunExited,
    TrialProgress,
    ValidationCompleted,
)
from master.experiments.plan import Plan
from master.experiments.restore import restore
from master.experiments.runs import TrialRuns
from master.experiments.search import (
    DefaultSearcherFactory,
    SearcherFactory,
    SearchError,
    SearchRun,
)
from master.experiments.signals import PreemptionSignals
from master.experiments.states import (
    EXPERIMENT_TERMINAL,
    TRIAL_STOPPING,
    ExperimentState,
    TrialState,
)
from master.experiments.store import NewTrialRow
from master.scheduler.state import Allocation, AllocationState, KillTask, Preemption
from master.state import MasterState

log = logging.getLogger(__name__)


class SearcherRefused(Exception):
    """The searcher refused the config (its ValueError is the cause); nothing was stored."""


class ExperimentEngine:
    def __init__(
        self,
        state: MasterState,
        searchers: SearcherFactory | None = None,
        collector: CheckpointCollector | None = None,
    ) -> None:
        self.state = state
        self.db = state.db
        self.searchers = searchers or DefaultSearcherFactory()
        self.collector = collector or CheckpointCollector(state.db)
        self.signals = PreemptionSignals()
        self.experiments: dict[int, LiveExperiment] = {}
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.runs = TrialRuns(state, self.signals, self.post, self._spawn)

    # ---- lifecycle ------------------------------------------------------------------------

    def install(self) -> None:
        """Hear about trial runs from the scheduler; call before the scheduler starts, so no
        end reported while the engine rebuilds is missed (they queue up)."""
        self.state.scheduler.exit_hooks.append(self._on_exit)
        self.state.scheduler.preempt_hooks[TASK_TYPE] = self._on_preempt

    async def start(self) -> None:
        """Rebuild from the database (the scheduler must have started), then serve events."""
        if self.state.config.checkpoint_storage is None:
            # The default shared_fs root lives in the master's data dir: create it, since
            # storage managers refuse to create a missing host_path (an unmounted share).
            default = self.state.config.resolved_checkpoint_storage
            assert isinstance(default, SharedFSStorage)
            await asyncio.to_thread(Path(default.host_path).mkdir, parents=True, exist_ok=True)
        for stored in await self.db.run(store.load_unfinished):
            try:
                await self._restore(stored)
            except Exception:
                log.exception("could not restore experiment %d", stored.id)
        self._runner = asyncio.create_task(self._run(), name="experiments")

    async def stop(self) -> None:
        for task in [self._runner, *self._background]:
            if task is not None:
                task.cancel()
        for task in [self._runner, *self._background]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def post(self, event: Event) -> None:
        self._queue.put_nowait(event)

    async def call(self, event: Event) -> Any:
        """Post ``event`` and wait for its answer (raises EngineError on refusal)."""
        event.reply = asyncio.get_running_loop().create_future()
        self.post(event)
        return await event.reply

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                result = await self._handle(event)
                if event.reply is not None and not event.reply.done():
                    event.reply.set_result(result)
            except EngineError as exc:
                if event.reply is not None and not event.reply.done():
                    event.reply.set_exception(exc)
            except Exception as exc:
                log.exception("experiment engine failed to handle %s", type(event).__name__)
                if event.reply is not None and not event.reply.done():
                    event.reply.set_exception(exc)
                await self._reload_after_failure(event)

    async def _handle(self, event: Event) -> Any:
        match event:
            case CreateExperiment():
                return await self._create(event)
            case ExperimentAction():
                return await self._action(event)
            case ContinueExperiment():
                return await self._continue(event)
            case KillTrial():
                return await self._kill_trial(event)
            case ValidationCompleted():
                return await self._validation_completed(event)
            case TrialProgress():
                return await self._trial_progress(event)
            case EarlyExit():
                return await self._early_exit(event)
            case RunExited():
                return await self._run_exited(event)
            case LaunchFailed():
                return await self._launch_failed(event)
            case PreemptRun():
                return await self._preempt_run(event)
            case PreemptionDeadline():
                return await self._preemption_deadline(event)
        raise TypeError(f"unknown event {event!r}")

    # ---- scheduler hooks (called on the scheduler's loop: post, never wait) ------------------

    async def _on_exit(self, allocation: Allocation, exit_code: int | None, reason: str) -> None:
        if allocation.task_type != TASK_TYPE or "DET_TRIAL_ID" not in allocation.env:
            return
        self.post(
            RunExited(
                trial_id=int(allocation.env["DET_TRIAL_ID"]),
                task_id=allocation.task_id,
                allocation_id=allocation.id,
                exit_code=exit_code,
                reason=reason,
                rejected=reason.startswith("rejected:"),
                interrupted=allocation.interrupted,
            )
        )

    async def _on_preempt(self, allocation: Allocation, why: Preemption) -> None:
        self.post(PreemptRun(allocation_id=allocation.id, reason=why.reason, deadline=why.deadline))

    # ---- reads for the REST API ------------------------------------------------------------

    def find_trial(self, trial_id: int) -> tuple[LiveExperiment, LiveTrial] | None:
        for experiment in self.experiments.values():
            trial = experiment.trials.get(trial_id)
            if trial is not None:
                return experiment, trial
        return None

    def searcher_operation(self, trial_id: int) -> tuple[int | None, bool]:
        """The trial's next ``validateAfter`` length, and whether it should stop."""
        found = self.find_trial(trial_id)
        if found is None:
            return None, True
        experiment, trial = found
        if trial.terminal or trial.state in TRIAL_STOPPING:
            return None, True
        return experiment.search.current(trial.request_id)

    # ---- creating ------------------------------------------------------------------------------

    def validate(self, config: ExperimentConfig) -> None:
        """Refuse (400) a config the searcher cannot run, e.g. grid without ``count``."""
        try:
            self.searchers.create(config, 0)
        except ValueError as exc:
            raise EngineError(400, f"invalid experiment config: {exc}") from exc

    async def _create(self, event: CreateExperiment) -> int:
        config = event.config
        state = ExperimentState.ACTIVE if event.activate else ExperimentState.PAUSED
        trial_state = TrialState.ACTIVE if event.activate else TrialState.PAUSED
        runs: dict[str, SearchRun] = {}

        def initial(experiment_id: int) -> store.Initial:
            try:
                searcher = self.searchers.create(config, experiment_id)
            except ValueError as exc:
                raise SearcherRefused() from exc
            run, effects = SearchRun.start(searcher)
            runs["run"] = run
            rows = [
                NewTrialRow(c.request_id, c.hparams, trial_state.value) for c in effects.creates
            ]
            return store.Initial(state.value, run.snapshot(), run.progress(), rows)

        values = {
            "owner_id": event.owner_id,
            "name": config.name or "",
            "description": config.description or "",
            "notes": "",
            "archived": False,
            "config": config.model_dump(mode="json"),
            "original_config": event.original_config,
            "checkpoint_storage": event.checkpoint_storage,
            "resource_pool": config.resources.resource_pool
            or self.state.config.default_resource_pool,
            "model_definition_size": event.model_definition_size,
            "progress": 0.0,
        }
        try:
            experiment_id, created = await self.db.run(
                partial(
                    store.insert_experiment,
                    values=values,
                    labels=config.labels,
                    files=event.files,
                    initial=initial,
                    now=self.state.clock(),
                )
            )
        except SearcherRefused as exc:
            raise EngineError(400, f"invalid experiment config: {exc.__cause__}") from exc
        experiment = LiveExperiment(
            id=experiment_id,
            owner_id=event.owner_id,
            state=state,
            reason=None,
            config=config,
            checkpoint_storage=event.checkpoint_storage,
            search=runs["run"],
        )
        for request_id, trial_id in created.items():
            experiment.trials[trial_id] = LiveTrial(trial_id, request_id, trial_state, 0, 0)
        self.experiments[experiment_id] = experiment
        plan = self._plan(experiment)
        if state == ExperimentState.ACTIVE:
            plan.launches.extend(experiment.trials.values())
        await self._finish(plan)
        return experiment_id

    # ---- user actions --------------------------------------------------------------------------

    def _plan(self, experiment: LiveExperiment) -> Plan:
        return Plan(experiment, self.state.clock())

    async def _action(self, event: ExperimentAction) -> None:
        experiment = self.experiments.get(event.experiment_id)
        if experiment is None:
            if event.action == "kill":
                return  # already over: nothing to kill
            raise EngineError(409, f"experiment {event.experiment_id} has ended")
        plan = self._plan(experiment)
        if event.action == "pause":
            plan.pause(self._queued)
        elif event.action == "activate":
            plan.activate()
        else:
            plan.kill(f"killed by {event.by}")
        await self._finish(plan)

    async def _continue(self, event: ContinueExperiment) -> None:
        """Reopen an ended experiment in the database, then restore it as after a restart:
        its reopened trial is launched from its latest checkpoint."""
        live = self.experiments.get(event.experiment_id)
        if live is not None:
            raise EngineError(409, continuing.not_ended_message(live.id, live.state.value))
        reopen = partial(
            continuing.reopen,
            experiment_id=event.experiment_id,
            config=event.config,
            searchers=self.searchers,
            renamed=event.renamed,
        )
        reopened = await self.db.run(reopen)
        for stored in await self.db.run(partial(store.load_unfinished, only=event.experiment_id)):
            await self._restore(stored)
        found = self.find_trial(reopened.trial_id)
        if found is not None:
            text = (
                f"experiment {event.experiment_id} continued by {event.by}: trial "
                f"{reopened.trial_id} trains from {reopened.trained} to {reopened.length}"
            )
            await self.runs.note(found[1], text, "INFO")

    def _queued(self, allocation_id: str) -> bool:
        live = self.state.scheduler.allocations.get(allocation_id)
        return live is not None and live.state == AllocationState.QUEUED

    async def _kill_trial(self, event: KillTrial) -> None:
        found = self.find_trial(event.trial_id)
        if found is None:
            return  # its experiment has ended, and so has it
        plan = self._plan(found[0])
        plan.kill_trial(found[1], f"killed by {event.by}")
        await self._finish(plan)

    # ---- what trials report --------------------------------------------------------------------

    def _reporting_trial(self, trial_id: int) -> tuple[LiveExperiment, LiveTrial]:
        found = self.find_trial(trial_id)
        if found is None or found[1].terminal:
            raise EngineError(409, f"trial {trial_id} has ended; it can report nothing more")
        return found

    async def _repeated(self, trial_id: int, key: str | None) -> bool:
        """Whether a report with idempotency ``key`` was applied (events run one at a time, so
        nothing applies it between this read and the change that stores the key)."""
        if key is None:
            return False
        return await self.db.run(partial(store.report_key_seen, trial_id=trial_id, key=key))

    async def _validation_completed(self, event: ValidationCompleted) -> None:
        if await self._repeated(event.trial_id, event.key):
            return
        experiment, trial = self._reporting_trial(event.trial_id)
        plan = self._plan(experiment)
        try:
            plan.validation_completed(trial, event.metric, event.length)
        except SearchError as exc:
            raise EngineError(400, str(exc)) from exc
        if event.key is not None:
            plan.change.report_keys.append((trial.id, event.key, "completed_operation"))
        await self._finish(plan)

    async def _trial_progress(self, event: TrialProgress) -> bool:
        """False for a trial the engine no longer runs (its experiment or it has ended): the
        caller writes the row alone."""
        found = self.find_trial(event.trial_id)
        if found is None or found[1].terminal:
            return False
        plan = self._plan(found[0])
        plan.trial_progress(found[1], event.fraction)
        await self._finish(plan)
        return True

    async def _early_exit(self, event: EarlyExit) -> None:
        if await self._repeated(event.trial_id, event.key):
            return
        experiment, trial = self._reporting_trial(event.trial_id)
        plan = self._plan(experiment)
        plan.early_exit(trial, event.reason)
        if event.key is not None:
            plan.change.report_keys.append((trial.id, event.key, "early_exit"))
        await self._finish(plan)

    async def _run_exited(self, event: RunExited) -> None:
        found = self.find_trial(event.trial_id)
        if found is None or found[1].allocation_id != event.allocation_id:
            return  # a run already handled (replayed after a restart) or of an ended trial
        preempted = self.signals.is_raised(event.allocation_id)
        self.signals.forget(event.allocation_id)
        plan = self._plan(found[0])
        plan.change.handled_tasks.append(event.task_id)
        plan.run_ended(
            found[1],
            event.exit_code,
            event.reason,
            preempted=preempted,
            rejected=event.rejected,
            interrupted=event.interrupted,
        )
        await self._finish(plan)

    async def _launch_failed(self, event: LaunchFailed) -> None:
        found = self.find_trial(event.trial_id)
        if found is None:
            return
        plan = self._plan(found[0])
        plan.launch_failed(found[1], event.reason)
        await self._finish(plan)

    # ---- preemption ------------------------------------------------------------------------------

    def _trial_of_allocation(self, allocation_id: str) -> tuple[LiveExperiment, LiveTrial] | None:
        for experiment in self.experiments.values():
            for trial in experiment.trials.values():
                if trial.allocation_id == allocation_id:
                    return experiment, trial
        return None

    async def _preempt_run(self, event: PreemptRun) -> None:
        found = self._trial_of_allocation(event.allocation_id)
        if found is None:
            return
        plan = self._plan(found[0])
        plan.ask_to_stop(found[1], event.reason, event.deadline)
        await self._finish(plan)

    async def _preemption_deadline(self, event: PreemptionDeadline) -> None:
        found = self._trial_of_allocation(event.allocation_id)
        if found is None or not self.signals.is_raised(event.allocation_id):
            return
        await self.runs.kill_after_deadline(*found)

    # ---- acting --------------------------------------------------------------------------------

    async def _finish(self, plan: Plan) -> None:
        plan.settle()
        await self._execute(plan)

    async def _execute(self, plan: Plan) -> None:
        experiment = plan.experiment
        # Log lines first: a trial's logs are complete once it is seen to have ended.
        for trial, text, level in plan.notes:
            await self.runs.note(trial, text, level)
        created = await self.db.run(
            partial(store.apply_change, change=plan.change, now=self.state.clock())
        )
        for new in plan.change.new_trials:
            trial = LiveTrial(created[new.request_id], new.request_id, TrialState(new.state), 0, 0)
            experiment.trials[trial.id] = trial
            if trial.state == TrialState.ACTIVE and experiment.state == ExperimentState.ACTIVE:
                plan.launches.append(trial)
        for task_id, reason in plan.kills:
            await self.state.scheduler.call(KillTask(task_id=task_id, reason=reason))
        for allocation_id in plan.preempts:
            self.runs.ask_to_stop(experiment, allocation_id, plan.deadlines.get(allocation_id))
        launched: set[int] = set()
        for trial in plan.launches:
            if trial.id in launched or trial.allocation_id is not None:
                continue
            if trial.state == TrialState.ACTIVE and experiment.state == ExperimentState.ACTIVE:
                launched.add(trial.id)
                await self.runs.launch(experiment, trial)
        if plan.collect:
            final = experiment.state in EXPERIMENT_TERMINAL
            self._spawn(self.collector.collect(experiment.id, experiment.checkpoint_storage, final))
        if experiment.state in EXPERIMENT_TERMINAL:
            self.experiments.pop(experiment.id, None)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- rebuilding ------------------------------------------------------------------------------

    async def _restore(self, stored: store.StoredExperiment) -> None:
        """Bring one unfinished experiment back into memory and reconcile it with its runs
        (``restore``): record, replay, relaunch, stop again."""
        config = ExperimentConfig.model_validate(stored.config)
        if stored.searcher_state is None:  # never: it is written with the experiment
            raise ValueError(f"experiment {stored.id} has no searcher snapshot")
        search = SearchRun.restore(self.searchers, config, stored.searcher_state)
        allocations = list(self.state.scheduler.allocations.values())
        restored = restore(stored, config, search, allocations, self.state.clock())
        experiment = restored.experiment
        self.experiments[experiment.id] = experiment
        for run in restored.record:
            await self.db.run(
                partial(
                    store.record_run,
                    trial_id=run.trial_id,
                    run_id=run.run_id,
                    task_id=run.task_id,
                    allocation_id=run.allocation_id,
                    now=self.state.clock(),
                )
            )
        for event in restored.replay:
            self.post(event)
        await self._finish(restored.plan)
        log.info(
            "restored experiment %d (%s, %d trials)",
            experiment.id,
            experiment.state.value,
            len(experiment.trials),
        )

    async def _reload_after_failure(self, event: Event) -> None:
        """After an unexpected failure memory may disagree with the database: reload the
        experiment concerned from the database, its truth."""
        experiment_id = getattr(event, "experiment_id", None)
        trial_id = getattr(event, "trial_id", None)
        if experiment_id is None and trial_id is not None:
            found = self.find_trial(trial_id)
            experiment_id = found[0].id if found else None
        if experiment_id is None:
            return
        self.experiments.pop(experiment_id, None)
        try:
            for stored in await self.db.run(store.load_unfinished):
                if stored.id == experiment_id:
                    await self._restore(stored)
        except Exception:
            log.exception("could not reload experiment %d", experiment_id)
