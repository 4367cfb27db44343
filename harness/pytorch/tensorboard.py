"""TensorBoard event files of a trial's metrics, where ``det tensorboard`` looks for them.

The master sets ``DET_TENSORBOARD_DIR`` to its ``tensorboard_dir``; a trial writes under
``<dir>/experiment/<experiment id>/trial/<trial id>/``, the layout ``harness.tensorboard``
serves. Only the chief writes. Without TensorBoard installed metrics still reach the master;
the trial logs one warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("harness.pytorch")


def trial_log_dir(root: str | Path, experiment_id: int, trial_id: int) -> Path:
    return Path(root) / "experiment" / str(experiment_id) / "trial" / str(trial_id)


class MetricWriter:
    """``training/<name>`` and ``validation/<name>`` scalars against batches trained."""

    def __init__(self, log_dir: Path | None) -> None:
        self._writer: Any = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            log.warning("not writing TensorBoard files to %s: %s", log_dir, exc)
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, group: str, steps_completed: int, metrics: dict[str, float]) -> None:
        """Add the scalars; they reach the file at :meth:`flush`, :meth:`close`, or when
        ``SummaryWriter`` flushes by itself (every 2 minutes)."""
        if self._writer is None:
            return
        for name, value in metrics.items():
            self._writer.add_scalar(f"{group}/{name}", value, steps_completed)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
