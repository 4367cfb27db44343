"""Which checkpoints the ``save_*`` policies no longer keep (pure: the master deletes them).

A checkpoint survives if any policy keeps it: among the latest ``save_trial_latest`` of its
trial, the best ``save_trial_best`` of its trial, or the best ``save_experiment_best`` of the
experiment; everything else goes. "Best" ranks by the searcher metric of the validation at that
checkpoint; a checkpoint without one (None or NaN) is never best, however few others there are,
so an unvalidated checkpoint is kept only as one of the latest. Ties go to the later checkpoint:
it is the more trained one and the one a trial resumes from.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CheckpointRecord:
    """What GC needs to know about one completed checkpoint."""

    uuid: str
    trial_id: int
    steps_completed: int
    """Batches trained when it was saved; orders a trial's checkpoints (later = larger; equal
    counts fall back to the order the records are given in)."""
    searcher_metric: float | None = None
    """The searcher metric of the validation at this checkpoint, if there was one."""


class RetentionPolicy(Protocol):
    """The ``save_*`` fields of any ``checkpoint_storage`` config."""

    @property
    def save_experiment_best(self) -> int: ...

    @property
    def save_trial_best(self) -> int: ...

    @property
    def save_trial_latest(self) -> int: ...


def _best(
    indexed: Sequence[tuple[int, CheckpointRecord]], n: int, smaller_is_better: bool
) -> list[CheckpointRecord]:
    """The ``n`` best with a metric; among equal metrics the later checkpoint ranks higher."""
    sign = 1.0 if smaller_is_better else -1.0
    scored = [
        (sign * r.searcher_metric, -r.steps_completed, -i, r)
        for i, r in indexed
        if r.searcher_metric is not None and not math.isnan(r.searcher_metric)
    ]
    scored.sort(key=lambda entry: entry[:3])
    return [entry[3] for entry in scored[:n]]


def _latest(indexed: Sequence[tuple[int, CheckpointRecord]], n: int) -> list[CheckpointRecord]:
    ranked = sorted(indexed, key=lambda ir: (ir[1].steps_completed, ir[0]), reverse=True)
    return [r for _i, r in ranked[:n]]


def checkpoints_to_delete(
    checkpoints: Iterable[CheckpointRecord],
    config: RetentionPolicy,
    smaller_is_better: bool,
    *,
    keep: Collection[str] = (),
) -> list[str]:
    """UUIDs of ``checkpoints`` that no policy keeps, in the order given.

    ``checkpoints`` should be every completed checkpoint of one experiment (the experiment-best
    ranking is over all of them). ``keep`` names uuids to spare regardless, e.g. a checkpoint a
    running trial is about to resume from.
    """
    indexed = list(enumerate(checkpoints))
    by_trial: dict[int, list[tuple[int, CheckpointRecord]]] = defaultdict(list)
    for i, record in indexed:
        by_trial[record.trial_id].append((i, record))

    kept: set[str] = set(keep)
    for trial in by_trial.values():
        kept.update(r.uuid for r in _latest(trial, config.save_trial_latest))
        kept.update(r.uuid for r in _best(trial, config.save_trial_best, smaller_is_better))
    kept.update(r.uuid for r in _best(indexed, config.save_experiment_best, smaller_is_better))

    doomed = [record.uuid for _i, record in indexed if record.uuid not in kept]
    return list(dict.fromkeys(doomed))  # a uuid listed twice is deleted once
