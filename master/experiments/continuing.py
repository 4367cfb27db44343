"""Continuing an ended single-trial experiment (Determined's ``det experiment continue``).

A completed, canceled or errored ``single`` experiment goes back to ``STATE_ACTIVE`` under the
same id, usually with a longer ``searcher.max_length``: its one trial is reopened and its next
run resumes from the trial's latest checkpoint, trains to the new length, validates and
completes as before. The search itself is reopened, not restarted: the searcher's trial keeps
its request id and what it trained, and is asked for one ``ValidateAfter`` at the new length.

:func:`reopen` is one transaction: it re-checks the experiment (it may have changed since the
REST handler looked), writes the new config, the reopened search and the trial's state, and
the engine then restores the experiment as it would after a master restart.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.experiment_config import ExperimentConfig
from master import models
from master.experiments.live import EngineError
from master.experiments.search import SearcherFactory, SearchRun
from master.experiments.states import EXPERIMENT_TERMINAL, ExperimentState, TrialState

ENDED = " or ".join(s.value for s in sorted(EXPERIMENT_TERMINAL))
COMPLETED_CHECKPOINT = "STATE_COMPLETED"


@dataclass(frozen=True)
class Reopened:
    trial_id: int
    trained: int  # the length the trial had validated at, in the searcher's unit
    length: int  # the new max_length


def not_ended_message(experiment_id: int, state: str) -> str:
    return (
        f"experiment {experiment_id} is {state}; only ended experiments ({ENDED}) can be continued"
    )


def reopened_search(snapshot: dict[str, Any], request_id: str, length: int) -> dict[str, Any]:
    """The stored search (``SearchRun.snapshot``) with the trial ``request_id`` running again
    towards ``length``: nothing shut down, one ``ValidateAfter(length)`` pending."""
    reopened = copy.deepcopy(snapshot)
    method = reopened["searcher"]["state"]
    for trial in method["trials"]:
        if trial["request_id"] == request_id:
            trial.update(target=length, state="running", exit_reason=None, created=True)
    method["shut_down"] = False
    last = reopened.get("requests", {}).get(request_id, {}).get("last_completed")
    reopened["requests"] = {
        request_id: {"pending": [length], "closed": False, "last_completed": last, "done": False}
    }
    reopened["shutdown"] = False
    reopened["failure"] = False
    return reopened


def reopen(
    session: Session,
    experiment_id: int,
    config: ExperimentConfig,
    searchers: SearcherFactory,
    renamed: dict[str, str],
) -> Reopened:
    """Reopen the experiment under ``config`` (already merged and validated by the caller);
    ``renamed``: the ``name``/``description`` the override set, if any. Raises
    :class:`EngineError` (409: not ended or no checkpoint; 400: nothing more to train) and
    writes nothing then."""
    row = session.get(models.Experiment, experiment_id)
    if row is None:
        raise EngineError(404, f"experiment {experiment_id} not found")
    if row.state not in {s.value for s in EXPERIMENT_TERMINAL}:
        raise EngineError(409, not_ended_message(experiment_id, row.state))
    trials = list(
        session.scalars(select(models.Trial).where(models.Trial.experiment_id == experiment_id))
    )
    if len(trials) != 1 or row.searcher_state is None:
        raise EngineError(
            400, f"experiment {experiment_id} has {len(trials)} trials; only one can continue"
        )
    (trial,) = trials
    if trial.latest_checkpoint is not None:
        checkpoint = session.get(models.Checkpoint, trial.latest_checkpoint)
        if checkpoint is None or checkpoint.state != COMPLETED_CHECKPOINT:
            state = checkpoint.state if checkpoint is not None else "gone"
            raise EngineError(
                409,
                f"trial {trial.id}'s latest checkpoint {trial.latest_checkpoint} is {state}: "
                "there is nothing to resume from",
            )
    assert config.searcher.max_length is not None  # the single searcher requires it
    length = config.searcher.max_length.value
    stored = row.searcher_state["searcher"]["state"]["trials"]
    trained = max((int(t.get("trained", 0)) for t in stored), default=0)
    if length <= trained:
        unit = config.searcher.max_length.unit
        raise EngineError(
            400,
            f"searcher.max_length: trial {trial.id} has already trained and validated "
            f"{trained} {unit}; to continue, ask for more than that (e.g. "
            f"--config searcher.max_length.{unit}={2 * trained})",
        )
    snapshot = reopened_search(row.searcher_state, trial.request_id, length)
    search = SearchRun.restore(searchers, config, snapshot)  # proves it loads
    row.config = config.model_dump(mode="json")
    for column, value in renamed.items():
        setattr(row, column, value)
    if config.resources.resource_pool:
        row.resource_pool = config.resources.resource_pool
    row.state = ExperimentState.ACTIVE.value
    row.state_reason = None
    row.end_time = None
    row.searcher_state = search.snapshot()
    row.progress = search.progress()
    trial.state = TrialState.ACTIVE.value
    trial.state_reason = None
    trial.end_time = None
    trial.early_exit = None
    trial.restarts = 0
    trial.progress = min(trained / length, 1.0)
    session.flush()
    return Reopened(trial.id, trained, length)
