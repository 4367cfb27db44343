"""Checkpoint garbage collection: delete what the ``save_*`` policies no longer keep.

Runs on the master after a trial ends and once more when its experiment ends, through the same
storage managers trials write with (``harness.storage``); the choice itself is
``harness.storage.gc.checkpoints_to_delete`` (pure). A checkpoint an unfinished trial would
resume from is always spared, and so is one a model version pins (the model registry). Deleted
checkpoints stay listed, as ``STATE_DELETED``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from harness.storage import build_storage, parse_storage_config
from harness.storage.gc import CheckpointRecord, checkpoints_to_delete
from master import models
from master.db import Database
from master.experiments.states import TRIAL_TERMINAL

log = logging.getLogger(__name__)

COMPLETED = "STATE_COMPLETED"
DELETED = "STATE_DELETED"


@dataclass(frozen=True)
class Candidates:
    records: list[CheckpointRecord]
    keep: set[str]
    smaller_is_better: bool


def pinned_checkpoints(session: Session, uuids: list[str]) -> set[str]:
    """Those of ``uuids`` a model version registers: never to be deleted (GC, or a person
    deleting a checkpoint or its experiment) while the version exists."""
    return set(
        session.scalars(
            select(models.ModelVersion.checkpoint_uuid)
            .where(models.ModelVersion.checkpoint_uuid.in_(uuids))
            .distinct()
        )
    )


def gather(session: Session, experiment_id: int) -> Candidates:
    """The experiment's completed checkpoints, each with the searcher metric of the validation
    at its step count (if any), and those never to delete: the ones unfinished trials would
    resume from and the ones a model version pins."""
    experiment = session.get_one(models.Experiment, experiment_id)
    searcher = experiment.config.get("searcher", {})
    smaller_is_better = bool(searcher.get("smaller_is_better", True))
    checkpoints = session.scalars(
        select(models.Checkpoint)
        .where(
            models.Checkpoint.experiment_id == experiment_id,
            models.Checkpoint.state == COMPLETED,
        )
        .order_by(models.Checkpoint.report_time)
    ).all()
    trials = session.execute(
        select(models.Trial.id, models.Trial.state, models.Trial.latest_checkpoint).where(
            models.Trial.experiment_id == experiment_id
        )
    ).all()
    terminal = {s.value for s in TRIAL_TERMINAL}
    keep = {latest for _, state, latest in trials if latest and state not in terminal}
    keep |= pinned_checkpoints(session, [c.uuid for c in checkpoints])
    metrics: dict[tuple[int, int], float] = {}
    rows = session.execute(
        select(
            models.TrialMetrics.trial_id,
            models.TrialMetrics.steps_completed,
            models.TrialMetrics.searcher_metric,
        )
        .where(
            models.TrialMetrics.trial_id.in_([t[0] for t in trials]),
            models.TrialMetrics.group == "validation",
            models.TrialMetrics.searcher_metric.is_not(None),
        )
        .order_by(models.TrialMetrics.id)
    )
    for trial_id, steps, metric in rows:
        if metric is not None:
            metrics[(trial_id, steps)] = metric
    records = [
        CheckpointRecord(
            uuid=c.uuid,
            trial_id=c.trial_id,
            steps_completed=c.steps_completed,
            searcher_metric=metrics.get((c.trial_id, c.steps_completed)),
        )
        for c in checkpoints
    ]
    return Candidates(records, keep, smaller_is_better)


def mark_deleted(session: Session, uuids: list[str]) -> None:
    session.execute(
        update(models.Checkpoint).where(models.Checkpoint.uuid.in_(uuids)).values(state=DELETED)
    )


class CheckpointCollector:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def collect(self, experiment_id: int, storage: dict[str, Any], final: bool) -> list[str]:
        """Delete the experiment's checkpoints no policy keeps; returns their uuids. Failures
        are logged, never raised: a checkpoint that could not be deleted stays listed."""
        async with self._locks[experiment_id]:
            try:
                return await self._collect(experiment_id, storage)
            except Exception:
                log.exception("checkpoint GC of experiment %d failed", experiment_id)
                return []
            finally:
                if final:
                    self._locks.pop(experiment_id, None)

    async def _collect(self, experiment_id: int, storage: dict[str, Any]) -> list[str]:
        candidates = await self.db.run(partial(gather, experiment_id=experiment_id))
        policy = parse_storage_config(storage)
        doomed = checkpoints_to_delete(
            candidates.records, policy, candidates.smaller_is_better, keep=candidates.keep
        )
        if not doomed:
            return []
        manager = build_storage(policy)
        deleted = []
        for uuid in doomed:
            try:
                await asyncio.to_thread(manager.delete, uuid)
            except Exception as exc:
                log.warning("could not delete checkpoint %s: %s", uuid, exc)
                continue
            deleted.append(uuid)
        if deleted:
            await self.db.run(partial(mark_deleted, uuids=deleted))
            log.info(
                "experiment %d: deleted %d checkpoint(s) no save_* policy keeps",
                experiment_id,
                len(deleted),
            )
        return deleted
