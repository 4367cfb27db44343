"""``det.core.init()`` and the contexts it gives, as thin wrappers over ``harness.core``.

Each wrapper keeps Determined's method names and arguments and calls harness's method that does
the same; what harness has no counterpart for raises ``UnsupportedAPIError`` naming it.
Differences kept on purpose are in docs/core-api.md ("Determined code unchanged").
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import harness.core
from harness.core import EarlyExitReason, InvalidHP

from .._info import ClusterInfo, get_cluster_info
from .._unsupported import missing_attribute, unsupported
from ._distributed import DistributedContext
from ._searcher import SearcherContext

log = logging.getLogger("determined.core")


class PreemptMode(enum.Enum):
    WorkersAskChief = "WORKERS_ASK_CHIEF"
    ChiefOnly = "CHIEF_ONLY"
    WorkersAskMaster = "WORKERS_ASK_MASTER"


class TensorboardMode(enum.Enum):
    AUTO = "AUTO"
    MANUAL = "MANUAL"


class DownloadMode(enum.Enum):
    DIRECT = "direct"
    MASTER = "master"
    AUTO = "auto"


class TrainContext:
    def __init__(self, inner: harness.core.TrainContext, searcher_metric: str | None) -> None:
        self._inner = inner
        self._searcher_metric = searcher_metric
        # The searcher metric of the latest validation, for Context.__exit__.
        self.last_searcher_metric: Any = None

    def report_training_metrics(
        self,
        steps_completed: int,
        metrics: dict[str, Any],
        batch_metrics: list[dict[str, Any]] | None = None,
    ) -> None:
        del batch_metrics  # per-batch detail is not kept; the averages are
        self._inner.report_training_metrics(steps_completed, metrics)

    def report_validation_metrics(self, steps_completed: int, metrics: dict[str, Any]) -> None:
        self._inner.report_validation_metrics(steps_completed, metrics)
        if self._searcher_metric is not None and self._searcher_metric in metrics:
            self.last_searcher_metric = metrics[self._searcher_metric]

    def report_metrics(self, group: str, steps_completed: int, metrics: dict[str, Any]) -> None:
        if group == "training":
            self._inner.report_training_metrics(steps_completed, metrics)
        elif group == "validation":
            self.report_validation_metrics(steps_completed, metrics)
        else:
            unsupported(f"train.report_metrics(group={group!r})", "use training or validation")

    def report_progress(self, progress: float) -> None:
        self._inner.report_progress(progress)

    def report_early_exit(self, reason: EarlyExitReason) -> None:
        self._inner.report_early_exit(reason)

    __getattr__ = missing_attribute("determined.core.TrainContext")


class CheckpointContext:
    def __init__(self, inner: harness.core.CheckpointContext) -> None:
        self._inner = inner

    @contextlib.contextmanager
    def store_path(
        self, metadata: dict[str, Any] | None = None, *, shard: bool = False
    ) -> Iterator[tuple[Path, str]]:
        """A directory to write the checkpoint into and its storage id (chief only)."""
        if shard:
            unsupported("checkpoint.store_path(shard=True)", "gather to the chief and save there")
        with self._inner.store_path(metadata or {}) as (path, storage_id):
            yield path, storage_id

    def upload(
        self,
        ckpt_dir: str | os.PathLike[str] | None,
        metadata: dict[str, Any] | None = None,
        *,
        shard: bool = False,
        selector: Callable[[str], bool] | None = None,
    ) -> str:
        if shard or selector is not None or ckpt_dir is None:
            unsupported("checkpoint.upload(shard=/selector=/ckpt_dir=None)")
        return self._inner.upload(ckpt_dir, metadata or {})

    @contextlib.contextmanager
    def restore_path(
        self,
        storage_id: str,
        download_mode: DownloadMode = DownloadMode.AUTO,
        selector: Callable[[str], bool] | None = None,
    ) -> Iterator[Path]:
        del download_mode  # tasks read checkpoint storage directly
        if selector is not None:
            unsupported("checkpoint.restore_path(selector=...)")
        with self._inner.restore_path(storage_id) as path:
            yield path

    def download(
        self,
        storage_id: str,
        ckpt_dir: str | os.PathLike[str],
        download_mode: DownloadMode = DownloadMode.AUTO,
        *,
        selector: Callable[[str], bool] | None = None,
    ) -> None:
        del download_mode
        if selector is not None:
            unsupported("checkpoint.download(selector=...)")
        self._inner.download(storage_id, ckpt_dir)

    def get_metadata(self, storage_id: str) -> dict[str, Any]:
        return self._inner.get_metadata(storage_id)

    __getattr__ = missing_attribute("determined.core.CheckpointContext")


class PreemptContext:
    def __init__(
        self, inner: harness.core.PreemptContext, dist: DistributedContext, mode: PreemptMode
    ) -> None:
        self._inner = inner
        self._dist = dist
        self._mode = mode

    def should_preempt(self, auto_ack: bool = True) -> bool:
        """Whether to stop now (a checkpoint saved). With ``auto_ack`` (the default) the first
        True also tells the master the trial stops to be resumed, as Determined does."""
        if self._mode is PreemptMode.WorkersAskChief:
            answer = self._inner.should_preempt()
        elif self._dist.is_chief:
            answer = self._inner.peek()
        elif self._mode is PreemptMode.ChiefOnly:
            raise RuntimeError(
                "PreemptContext was configured with preempt_mode=ChiefOnly but should_preempt() "
                f"was called from non-chief worker of rank={self._dist.rank}"
            )
        else:
            unsupported("preempt_mode=WorkersAskMaster on a worker other than the chief")
        if answer and auto_ack:
            self._inner.acknowledge()
        return answer

    def acknowledge_preemption_signal(self) -> None:
        self._inner.acknowledge()

    __getattr__ = missing_attribute("determined.core.PreemptContext")


class Context:
    """What ``with det.core.init() as core_context:`` gives."""

    def __init__(self, inner: harness.core.Context, info: ClusterInfo | None, mode: PreemptMode):
        self._inner = inner
        self.info = info
        self.distributed = _as_determined(inner.distributed)
        self.train = TrainContext(inner.train, inner.searcher.metric)
        self.checkpoint = CheckpointContext(inner.checkpoint)
        self.preempt = PreemptContext(inner.preempt, self.distributed, mode)
        self.searcher = SearcherContext(inner.searcher, inner.train, inner.distributed)

    def start(self) -> None:
        """Nothing: :func:`init` started what needs starting."""

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, InvalidHP):  # as Determined: an early exit, then exit 0
            self.train.report_early_exit(EarlyExitReason.INVALID_HP)
            self._inner.__exit__(None, None, None)
            log.info("InvalidHP detected, converting InvalidHP to exit(0)")
            sys.exit(0)
        if exc is None:
            try:
                self._complete_searcher()
            except BaseException as error:
                self._inner.__exit__(type(error), error, error.__traceback__)
                raise
        self._inner.__exit__(exc_type, exc, tb)

    def _complete_searcher(self) -> None:
        """Since Determined 0.38 a script need not ask for searcher operations: it trains as
        long as it likes and exits 0, and the searcher reads the validation metrics. Flotilla's
        searcher hands out operations; for a script that never asked, leaving the ``with`` block
        cleanly (not preempted) completes them with the latest validation's searcher metric."""
        if self.searcher.used or self._inner.preempt.should_preempt():
            return
        metric = self.distributed.broadcast(self.train.last_searcher_metric)
        if metric is None:
            if self.distributed.is_chief:
                log.warning(
                    "no validation reported searcher.metric %r, so the searcher's operations "
                    "stay open and the master will count this trial as failed: report it with "
                    "train.report_validation_metrics() (or use searcher.operations())",
                    self._inner.searcher.metric,
                )
            return
        for op in self.searcher.operations():
            if self.distributed.is_chief:
                op.report_completed(metric)

    __getattr__ = missing_attribute("determined.core.Context")


def _as_determined(dist: harness.core.DistributedContext) -> DistributedContext:
    return dist if isinstance(dist, DistributedContext) else DistributedContext._wrap(dist)


def init(
    *,
    distributed: DistributedContext | None = None,
    checkpoint_storage: str | dict[str, Any] | None = None,
    preempt_mode: PreemptMode = PreemptMode.WorkersAskChief,
    tensorboard_mode: TensorboardMode = TensorboardMode.AUTO,
) -> Context:
    """The Core API of the trial this process runs in (``with det.core.init() as ctx:``).

    Only trials started by Flotilla's master have one; elsewhere this raises
    ``harness.core.NotInTrialError`` (Determined would fall back to a local "dummy" context).
    """
    del tensorboard_mode  # the trainer writes TensorBoard files; scripts write their own
    if checkpoint_storage is not None:
        unsupported(
            "core.init(checkpoint_storage=...)",
            "set checkpoint_storage in the experiment config instead",
        )
    inner = harness.core.init(distributed=distributed)
    return Context(inner, get_cluster_info(), PreemptMode(preempt_mode))
