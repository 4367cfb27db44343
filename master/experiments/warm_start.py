"""Warm start (Determined's ``searcher.source_trial_id`` / ``searcher.source_checkpoint_uuid``):
every trial of a new experiment starts from the model weights of an earlier checkpoint.

The reference is resolved once, when the experiment is created: a trial id becomes the uuid of
that trial's latest completed checkpoint, written into the stored config as
``searcher.source_checkpoint_uuid`` (``source_trial_id`` stays, saying where it came from). So
later trials of a search, and trials restored after a master restart, all start from the same
checkpoint, even if the source trial checkpoints again meanwhile, and no column is needed.

The checkpoint lives in its own experiment's checkpoint storage, which may not be the new
experiment's: a run reads that storage (fixed when the source experiment was created) when it
is launched and hands it to the trial with the uuid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from harness.experiment_config import ExperimentConfig
from master import models

COMPLETED = "STATE_COMPLETED"


class WarmStartError(ValueError):
    """A warm-start reference that cannot be used; the message names the config field."""


@dataclass(frozen=True)
class WarmStart:
    """What a trial's first run is given: the checkpoint and the storage to read it from, and
    the checkpoint's state now (its experiment may have garbage-collected it since)."""

    checkpoint: str
    storage: dict[str, Any]
    state: str


def resolve(session: Session, config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with ``searcher.source_checkpoint_uuid`` set to the checkpoint to warm-start
    from (unchanged without a warm start); :class:`WarmStartError` for a bad reference."""
    searcher = config.searcher
    trial_id, uuid = searcher.source_trial_id, searcher.source_checkpoint_uuid
    if trial_id is not None and uuid is not None:
        raise WarmStartError(
            "searcher.source_trial_id, searcher.source_checkpoint_uuid: give at most one of "
            "them (a trial to warm-start from its latest checkpoint, or a checkpoint)"
        )
    if trial_id is not None:
        uuid = latest_checkpoint_of(session, trial_id)
    elif uuid is not None:
        checkpoint = session.get(models.Checkpoint, uuid)
        if checkpoint is None:
            raise WarmStartError(f"searcher.source_checkpoint_uuid: checkpoint {uuid} not found")
        if checkpoint.state != COMPLETED:
            raise WarmStartError(
                f"searcher.source_checkpoint_uuid: checkpoint {uuid} is {checkpoint.state}; "
                f"only a {COMPLETED} checkpoint can be warm-started from"
            )
    else:
        return config
    resolved = searcher.model_copy(update={"source_checkpoint_uuid": uuid})
    return config.model_copy(update={"searcher": resolved})


def latest_checkpoint_of(session: Session, trial_id: int) -> str:
    """The trial's latest completed checkpoint (most batches trained, then most recent), as
    Determined picks it for ``source_trial_id``; checkpoints already garbage-collected do not
    count."""
    if session.get(models.Trial, trial_id) is None:
        raise WarmStartError(f"searcher.source_trial_id: trial {trial_id} not found")
    uuid = session.scalar(
        select(models.Checkpoint.uuid)
        .where(models.Checkpoint.trial_id == trial_id, models.Checkpoint.state == COMPLETED)
        .order_by(models.Checkpoint.steps_completed.desc(), models.Checkpoint.report_time.desc())
        .limit(1)
    )
    if uuid is None:
        raise WarmStartError(f"searcher.source_trial_id: trial {trial_id} has no checkpoint")
    return uuid


def for_run(session: Session, uuid: str) -> WarmStart:
    """The warm start of a run: ``uuid`` with its experiment's resolved checkpoint storage."""
    row = session.execute(
        select(models.Experiment.checkpoint_storage, models.Checkpoint.state)
        .join(models.Checkpoint, models.Checkpoint.experiment_id == models.Experiment.id)
        .where(models.Checkpoint.uuid == uuid)
    ).first()
    if row is None:  # never: checkpoints and experiments are not deleted
        raise WarmStartError(f"searcher.source_checkpoint_uuid: checkpoint {uuid} not found")
    return WarmStart(uuid, dict(row[0]), row[1])
