"""Trial runs as the experiment engine starts and stops them: its hands on the cluster.

The engine decides (``plan``) and records (``store``); what a decision does to a run lives here,
apart from the event loop, because it is the part that talks to the outside world:

- launching: the run's inputs are read and its number taken in the database, the run is
  submitted as a TRIAL task (``launch.trial_spec``), and the task it became is recorded;
- preemption: the run is asked to checkpoint and exit (``signals``), and killed if it has not
  exited once ``preemption_timeout`` has passed;
- the master's own lines in a trial's logs ("trial 3 run 2 submitted from checkpoint …").

Assumes it is called only from the engine's loop, one event at a time: it mutates the
:class:`LiveTrial` it is given (run number, task, allocation) and never the engine's map of
experiments. What comes back later returns as an event through ``post``, never as an exception:
a submission the cluster refuses as :class:`LaunchFailed`, a preemption timeout that expired as
:class:`PreemptionDeadline`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import partial
from typing import Any

from harness.experiment_config_determined import ineffective_fields
from master.api.errors import ApiError
from master.experiments import store, warm_start
from master.experiments.launch import RunRequest, trial_spec
from master.experiments.live import (
    Event,
    LaunchFailed,
    LiveExperiment,
    LiveTrial,
    PreemptionDeadline,
)
from master.experiments.signals import PreemptionSignals
from master.scheduler.state import KillTask
from master.state import MasterState
from master.tasks import submit_task


class TrialRuns:
    """Starts, signals and kills the runs of the engine's trials.

    ``post`` queues an event for the engine; ``spawn`` runs a coroutine in the background and
    cancels it when the engine stops (the preemption timers).
    """

    def __init__(
        self,
        state: MasterState,
        signals: PreemptionSignals,
        post: Callable[[Event], None],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.state = state
        self.db = state.db
        self.signals = signals
        self._post = post
        self._spawn = spawn

    # ---- launching -----------------------------------------------------------------------------

    async def launch(self, experiment: LiveExperiment, trial: LiveTrial) -> None:
        """Start the trial's next run, from its latest checkpoint (or its warm start)."""
        run_id = trial.run_id + 1
        inputs = await self.db.run(
            partial(
                store.start_run,
                trial_id=trial.id,
                run_id=run_id,
                warm_start_checkpoint=experiment.config.searcher.source_checkpoint_uuid,
            )
        )
        trial.run_id = run_id
        trial.early_exit = None
        trial.killed = False
        latest, warm = inputs.latest_checkpoint, inputs.warm_start
        request = RunRequest(
            experiment_id=experiment.id,
            trial_id=trial.id,
            run_id=run_id,
            owner_id=experiment.owner_id,
            hparams=inputs.hparams,
            latest_checkpoint=latest,
            checkpoint_storage=experiment.checkpoint_storage,
            files=inputs.files,
            warm_start_checkpoint=warm.checkpoint if warm else None,
            warm_start_storage=warm.storage if warm else None,
        )
        spec = trial_spec(experiment.config, request, self.state.config.resolved_tensorboard_dir)
        try:
            submitted = await submit_task(self.state, spec)
        except ApiError as exc:
            self._post(LaunchFailed(trial_id=trial.id, reason=exc.message))
            return
        trial.task_id = submitted.task_id
        trial.allocation_id = submitted.allocation_id
        await self.db.run(
            partial(
                store.record_run,
                trial_id=trial.id,
                run_id=run_id,
                task_id=submitted.task_id,
                allocation_id=submitted.allocation_id,
                now=self.state.clock(),
            )
        )
        resumed = f" from checkpoint {latest}" if latest else ""
        if warm is not None:
            resumed = f", warm-starting from the model weights of checkpoint {warm.checkpoint}"
        await self.note(trial, f"trial {trial.id} run {run_id} submitted{resumed}", "INFO")
        if run_id == 1:
            for warning in ineffective_fields(experiment.config):
                await self.note(trial, f"experiment config: {warning}", "WARNING")
        if warm is not None and warm.state != warm_start.COMPLETED:
            await self.note(
                trial,
                f"the warm-start checkpoint {warm.checkpoint} is {warm.state} (its experiment's "
                "checkpoint policy removed it): this run cannot load it",
                "WARNING",
            )

    async def note(self, trial: LiveTrial, text: str, level: str) -> None:
        """A line in the trial's logs (its current run's task, or the last one)."""
        task_id, allocation_id = trial.task_id, trial.allocation_id
        if task_id is None:
            last = await self.db.run(partial(store.last_task, trial_id=trial.id))
            if last is None:
                return
            task_id, allocation_id = last
        await self.state.logs.master_line(task_id, allocation_id, text, self.state.clock(), level)

    # ---- preemption ----------------------------------------------------------------------------

    def ask_to_stop(
        self, experiment: LiveExperiment, allocation_id: str, until: datetime | None = None
    ) -> None:
        """Raise the run's preemption signal (once), and post :class:`PreemptionDeadline` when
        the experiment's ``preemption_timeout`` (if any) has passed, or at ``until`` (a spot
        instance's end) if that comes first; a later, earlier ``until`` is honoured too."""
        raised = self.signals.is_raised(allocation_id)
        self.signals.signal(allocation_id)
        waits = []
        timeout = experiment.config.preemption_timeout
        if timeout is not None and not raised:
            waits.append(timeout.total_seconds())
        if until is not None:
            waits.append(max(0.0, (until - self.state.clock()).total_seconds()))
        if waits:

            async def deadline() -> None:
                await asyncio.sleep(min(waits))
                self._post(PreemptionDeadline(allocation_id=allocation_id))

            self._spawn(deadline())

    async def kill_after_deadline(self, experiment: LiveExperiment, trial: LiveTrial) -> None:
        """Kill a run that did not exit within ``preemption_timeout`` of being asked to, or by
        its spot instance's end. The
        trial is marked ``killed``: its run's end is an interruption, not a failure."""
        timeout = experiment.config.preemption_timeout
        trial.killed = True
        assert trial.task_id is not None
        await self.state.scheduler.call(
            KillTask(
                task_id=trial.task_id,
                reason=f"killed: did not exit by its preemption deadline (preemption_timeout "
                f"{timeout}, or its spot instance's end) after being asked to checkpoint",
            )
        )
