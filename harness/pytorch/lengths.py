"""Training lengths in batches: the trainer counts batches, configs speak any of three units.

Searcher operations, ``min_validation_period`` and ``min_checkpoint_period`` may be given in
``records``, ``batches`` or ``epochs`` (``harness.experiment_config.Length``). One batch is one
*global* batch (all workers together), so a length means the same amount of training however
many slots a trial uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.experiment_config import Length, Unit


@dataclass(frozen=True)
class BatchMath:
    """Converts lengths to batches for one trial's data."""

    global_batch_size: int
    batches_per_epoch: int | None  # None: unknown (a data loader without a length)

    @classmethod
    def for_data(
        cls,
        *,
        global_batch_size: int,
        records_per_epoch: int | None,
        loader_batches: int | None,
    ) -> BatchMath:
        """``records_per_epoch`` (from the config) wins over the loader's length (the number of
        global batches one pass over the training data takes)."""
        if global_batch_size < 1:
            raise ValueError(f"the global batch size must be at least 1, got {global_batch_size}")
        if records_per_epoch is not None:
            per_epoch: int | None = max(1, math.ceil(records_per_epoch / global_batch_size))
        else:
            per_epoch = loader_batches
        return cls(global_batch_size=global_batch_size, batches_per_epoch=per_epoch)

    def to_batches(self, unit: Unit | str, value: int) -> int:
        """``value`` ``unit``s as a whole number of batches (records round up)."""
        unit = Unit(unit)
        if unit is Unit.BATCHES:
            return value
        if unit is Unit.RECORDS:
            return math.ceil(value / self.global_batch_size)
        if self.batches_per_epoch is None:
            raise ValueError(
                "lengths in epochs need the epoch's size: set records_per_epoch in the experiment "
                "config (the training data loader has no length)"
            )
        return value * self.batches_per_epoch

    def length(self, length: Length | None) -> int | None:
        """A config ``Length`` in batches (None stays None)."""
        return None if length is None else self.to_batches(length.unit, length.value)
