"""``harness.core.init()``: everything a training script needs from the cluster, in one object.

A script asks one object instead of reading ``DET_*`` variables and calling REST endpoints
itself, so the contract with the master (docs/design/experiments.md) lives in ``harness.core``
and scripts survive changes to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from harness.client import MasterClient
from harness.core.api import TrialAPI
from harness.core.checkpoint import CheckpointContext, Storage, storage_from_config
from harness.core.distributed import DistributedContext
from harness.core.env import TrialEnv
from harness.core.patience import Patience
from harness.core.preempt import PreemptContext
from harness.core.searcher import SearcherContext
from harness.core.train import TrainContext

log = logging.getLogger("harness.core")


@dataclass(frozen=True)
class TrialInfo:
    """Who this trial is and what it was started with."""

    experiment_id: int
    trial_id: int
    trial_run_id: int  # 1 for the first run, +1 for each restart
    latest_checkpoint: str | None  # uuid to resume from; None on a fresh start
    hparams: dict[str, Any]
    config: dict[str, Any]  # the validated experiment config, as JSON
    task_id: str
    allocation_id: str
    tensorboard_dir: str | None  # where the master wants TensorBoard files, if anywhere
    # Warm start (searcher.source_trial_id / source_checkpoint_uuid): the checkpoint whose model
    # weights a trial with no checkpoint of its own starts from; None when latest_checkpoint is
    # set. core.checkpoint reads it from warm_start_storage, where it lives.
    warm_start_checkpoint: str | None = None
    warm_start_storage: dict[str, Any] | None = None  # a checkpoint_storage config, as JSON

    @property
    def user_data(self) -> dict[str, Any]:
        """The experiment config's ``data`` section (Determined's ``ClusterInfo.user_data``)."""
        data = self.config.get("data")
        return dict(data) if isinstance(data, dict) else {}


class Context:
    """What ``with harness.core.init() as core:`` gives: ``core.train``, ``core.checkpoint``,
    ``core.preempt``, ``core.searcher``, ``core.distributed``, ``core.hparams``, ``core.info``."""

    def __init__(
        self,
        env: TrialEnv,
        *,
        distributed: DistributedContext,
        storage: Callable[[], Storage],
        client_factory: Callable[[float], MasterClient],
    ) -> None:
        self.info = TrialInfo(
            experiment_id=env.experiment_id,
            trial_id=env.trial_id,
            trial_run_id=env.trial_run_id,
            latest_checkpoint=env.latest_checkpoint,
            hparams=env.hparams,
            config=env.config,
            task_id=env.task_id,
            allocation_id=env.allocation_id,
            tensorboard_dir=env.tensorboard_dir,
            warm_start_checkpoint=env.warm_start_checkpoint,
            warm_start_storage=env.warm_start_storage,
        )
        self.hparams = env.hparams
        self.distributed = distributed
        self._client = client_factory(30.0)
        self._api = TrialAPI(
            self._client,
            trial_id=env.trial_id,
            trial_run_id=env.trial_run_id,
            task_id=env.task_id,
            allocation_id=env.allocation_id,
            patience=Patience(env.master_unreachable_timeout),
        )
        self.train = TrainContext(self._api, distributed)
        self.checkpoint = CheckpointContext(
            self._api, distributed, storage, sources=_warm_start_source(env)
        )
        self.preempt = PreemptContext(self._api, distributed, client_factory)
        self.searcher = SearcherContext(
            self._api, distributed, self.train, self.preempt, env.config
        )
        self._closed = False

    def start(self) -> Context:
        self.preempt.start()
        return self

    def close(self) -> None:
        """Send the reports still queued (raising the error of one that failed), stop watching
        for preemption and leave the process group."""
        self._close(raise_report_error=True)

    def _close(self, *, raise_report_error: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if self.preempt.peek() and not self.preempt.acknowledged:
            log.warning(
                "the master asked this trial to stop but core.preempt.acknowledge() was not "
                "called: if the process exits 0 now, the master takes the trial as finished"
            )
        try:
            self._api.close(raise_error=raise_report_error)
        finally:
            self.preempt.close()
            self._client.close()
            self.distributed.close()

    def __enter__(self) -> Context:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving with an exception: that one matters; a failed report is only logged.
        self._close(raise_report_error=exc is None)


def _warm_start_source(env: TrialEnv) -> dict[str, Callable[[], Storage]]:
    """Where ``core.checkpoint`` reads the warm-start checkpoint: its own storage, which may be
    another experiment's (else the trial's, e.g. when a test sets no storage)."""
    uuid, config = env.warm_start_checkpoint, env.warm_start_storage
    if uuid is None or not config:
        return {}
    return {uuid: lambda: storage_from_config(config)}


def init(
    *,
    environ: Mapping[str, str] | None = None,
    distributed: DistributedContext | None = None,
    storage: Storage | None = None,
) -> Context:
    """The Core API of the trial this process runs in (``with harness.core.init() as core:``).

    Reads the trial's ``DET_*`` variables (:class:`~harness.core.env.NotInTrialError` outside a
    trial), joins the other workers if there are several (``RANK``/``WORLD_SIZE`` from
    ``python -m harness.launch``) and starts watching for preemption. ``distributed`` and
    ``storage`` replace what the environment would give (tests, unusual setups).
    """
    env = TrialEnv.from_environ(environ)
    dist = distributed if distributed is not None else DistributedContext.from_environ(environ)

    def make_storage() -> Storage:
        return storage if storage is not None else storage_from_config(env.checkpoint_storage)

    def make_client(timeout: float) -> MasterClient:
        return MasterClient(env.master_url, token=env.token, timeout=timeout)

    return Context(env, distributed=dist, storage=make_storage, client_factory=make_client).start()
