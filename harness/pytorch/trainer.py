"""The training loop around a :class:`~harness.pytorch.Trial` (docs/trainer.md).

For each searcher operation ``ValidateAfter(length)`` it trains batch by batch up to
``length``, then validates, checkpoints and reports the searcher metric. Along the way it
reports averaged training metrics every ``scheduling_unit`` batches, validates every
``min_validation_period`` and checkpoints every ``min_checkpoint_period``. Asked to stop
(preemption) it checkpoints, acknowledges and returns, and the next run resumes from that
checkpoint exactly: weights, optimizer and scheduler states, every random generator, and the
position in the epoch, so the resumed run computes what an uninterrupted one would have. A
warm-started trial (``searcher.source_trial_id``) takes only the models' weights from another
trial's checkpoint and otherwise starts fresh.

With several workers every worker runs this loop in lockstep: the decisions (how far to train,
whether to stop) come from the chief, and every report or checkpoint point is a collective.
"""

from __future__ import annotations

import logging
import math
import time
from enum import StrEnum
from typing import Any

import torch
from torch.utils.data import DataLoader

import harness.core
from harness.core import Context, InvalidHP
from harness.core.distributed import DistributedContext
from harness.core.metrics import check_metrics
from harness.core.train import EarlyExitReason
from harness.experiment_config import ExperimentConfig, Unit, parse_experiment_config
from harness.pytorch import rng
from harness.pytorch.context import LRStepMode, TrialContext
from harness.pytorch.data import (
    EpochIterator,
    batch_length,
    loader_length,
    shard_loader,
    to_device,
)
from harness.pytorch.lengths import BatchMath
from harness.pytorch.tensorboard import MetricWriter, trial_log_dir
from harness.pytorch.trial import Trial

log = logging.getLogger("harness.pytorch")

# The trainer's file in each checkpoint it writes.
CHECKPOINT_FILE = "state.pt"
CHECKPOINT_FORMAT = 1
# Progress only moves a bar in the UI: while training, report it at most this often (seconds).
PROGRESS_INTERVAL_SECONDS = 1.0


class Outcome(StrEnum):
    """How a run ended; every one of them is a clean exit (code 0)."""

    COMPLETED = "completed"  # the searcher has no more work for this trial
    PREEMPTED = "preempted"  # checkpointed and acknowledged; the master resumes it later
    INVALID_HP = "invalid_hp"  # the trial raised InvalidHP; reported as an early exit


def trial_seed(experiment_id: int, trial_id: int) -> int:
    """The seed of a trial: fixed for its lifetime (all runs), different between trials."""
    return (experiment_id * 1_000_003 + trial_id * 7_919) % (2**31 - 1)


class _Averager:
    """Weighted sums of metrics, averaged over all workers on demand."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.batches = 0

    def add(self, metrics: dict[str, int | float], weight: float = 1.0) -> None:
        for name, value in metrics.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * weight
            self.weights[name] = self.weights.get(name, 0.0) + weight
        self.batches += 1

    def averaged(self, dist: DistributedContext) -> dict[str, float]:
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for worker_sums, worker_weights in dist.allgather((self.sums, self.weights)):
            for name, value in worker_sums.items():
                sums[name] = sums.get(name, 0.0) + value
                weights[name] = weights.get(name, 0.0) + worker_weights[name]
        return {name: sums[name] / weights[name] for name in sorted(sums) if weights[name]}


class Trainer:
    """Runs ``trial_class`` as the trial ``core`` describes; see :meth:`run`."""

    def __init__(
        self,
        trial_class: type[Trial],
        core: Context,
        *,
        device: torch.device | None = None,
        seed: int | None = None,
    ) -> None:
        self.trial_class = trial_class
        self.core = core
        self.dist = core.distributed
        self.device = device or _default_device(self.dist)
        self.config: ExperimentConfig = parse_experiment_config(core.info.config)
        # reproducibility.experiment_seed stands in for the experiment id, as in Determined.
        base = self.config.reproducibility.experiment_seed
        self.seed = (
            seed
            if seed is not None
            else trial_seed(core.info.experiment_id if base is None else base, core.info.trial_id)
        )
        tensorboard = core.info.tensorboard_dir
        self.writer = MetricWriter(
            trial_log_dir(tensorboard, core.info.experiment_id, core.info.trial_id)
            if tensorboard and self.dist.is_chief
            else None
        )
        self.batches_trained = 0
        self.last_validation: tuple[int, dict[str, float]] | None = None
        self.last_checkpoint_step: int | None = None
        self.last_checkpoint_uuid: str | None = None
        self.training = _Averager()
        self.last_progress_time = -math.inf

    # ---- the run -------------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Train until the searcher is done with this trial or the master asks it to stop."""
        try:
            return self._run()
        except InvalidHP as exc:
            log.warning("the trial gave up on its hyperparameters: %s", exc)
            self.core.train.report_early_exit(EarlyExitReason.INVALID_HP)
            return Outcome.INVALID_HP
        finally:
            self.writer.close()

    def _run(self) -> Outcome:
        rng.seed_everything(self.seed)
        self.context = TrialContext(self.core, self.device, self.seed)
        self.trial = self.trial_class(self.context)
        train_loader, self.val_loader = self._loaders()
        self.batches = EpochIterator(train_loader)
        self.math = BatchMath.for_data(
            global_batch_size=self.context.get_global_batch_size(),
            records_per_epoch=self.config.records_per_epoch,
            loader_batches=loader_length(train_loader),
        )
        self.validation_period = self.math.length(self.config.min_validation_period)
        self.checkpoint_period = self.math.length(self.config.min_checkpoint_period)
        self.max_batches = self.math.length(self.config.searcher.max_length)
        if self.core.info.latest_checkpoint:
            self._restore(self.core.info.latest_checkpoint)
        elif self.core.info.warm_start_checkpoint:
            self._warm_start(self.core.info.warm_start_checkpoint)
        for model in self.context.models:
            model.wrapped.train()
        if (
            self.config.perform_initial_validation
            and self.batches_trained == 0
            and self.last_validation is None
        ):
            self._validate()

        preempted = False
        for op in self.core.searcher.operations():
            target = self._op_batches(op.length)
            preempted = self._train_until(target)
            if preempted:
                self._report_progress(target, now=True)
                break
            metrics = self._validation_now()
            self._checkpoint_if_new()
            op.report_completed(self._searcher_metric(metrics))
            self._report_progress(target, now=True)
        if preempted or self.core.preempt.should_preempt():
            self._flush_training()
            self._checkpoint_if_new()
            self.core.preempt.acknowledge()
            log.info("preempted after %d batches; checkpointed", self.batches_trained)
            return Outcome.PREEMPTED
        log.info("the searcher is done with this trial after %d batches", self.batches_trained)
        return Outcome.COMPLETED

    def _op_batches(self, length: int) -> int:
        max_length = self.config.searcher.max_length
        unit = max_length.unit if max_length is not None else Unit.BATCHES
        return self.math.to_batches(unit, length)

    def _train_until(self, target: int) -> bool:
        """Train up to ``target`` batches; True if the master asked to stop first."""
        scheduling_unit = self.config.scheduling_unit
        while self.batches_trained < target:
            if self.core.preempt.should_preempt():
                return True
            self._train_batch()
            step = self.batches_trained
            if step % scheduling_unit == 0:
                self._flush_training()
                self._report_progress(target)
            last_validation = self.last_validation[0] if self.last_validation else 0
            if self.validation_period and step - last_validation >= self.validation_period:
                self._validate()
            last_checkpoint = self.last_checkpoint_step or 0
            if self.checkpoint_period and step - last_checkpoint >= self.checkpoint_period:
                self._checkpoint()
        return False

    def _train_batch(self) -> None:
        epoch_before = self.batches.epoch_idx
        batch = self.batches.next()
        for _ in range(self.batches.epoch_idx - epoch_before):
            self._step_schedulers(LRStepMode.EPOCH)
        metrics = self.trial.train_batch(
            to_device(batch, self.device), self.batches.epoch_idx, self.batches_trained
        )
        self.batches_trained += 1
        self.training.add(check_metrics(metrics, "the metrics train_batch returned"))
        self._step_schedulers(LRStepMode.BATCH)

    def _step_schedulers(self, mode: LRStepMode) -> None:
        for wrapped in self.context.lr_schedulers:
            if wrapped.step_mode is mode:
                wrapped.scheduler.step()

    # ---- reporting -----------------------------------------------------------------------------

    def _flush_training(self) -> None:
        """Report the average of the training metrics since the last report."""
        if self.training.batches == 0:
            return
        metrics = self.training.averaged(self.dist)
        self.training = _Averager()
        self.core.train.report_training_metrics(self.batches_trained, metrics)
        self.writer.write("training", self.batches_trained, metrics)

    def _report_progress(self, target: int, *, now: bool = False) -> None:
        """Report progress ``now``, else unless it was reported in the last
        :data:`PROGRESS_INTERVAL_SECONDS`."""
        total = self.max_batches or target
        clock = time.monotonic()
        if not total or (not now and clock - self.last_progress_time < PROGRESS_INTERVAL_SECONDS):
            return
        self.last_progress_time = clock
        self.core.train.report_progress(self.batches_trained / total)

    def _validate(self) -> dict[str, float]:
        self._flush_training()
        averager = _Averager()
        # Iterating a data loader draws from torch's generator: keep training's untouched.
        with rng.preserved(self.batches.generators), torch.no_grad():
            for model in self.context.models:
                model.wrapped.eval()
            try:
                for batch in self.val_loader:
                    metrics = self.trial.evaluate_batch(to_device(batch, self.device))
                    checked = check_metrics(metrics, "the metrics evaluate_batch returned")
                    averager.add(checked, batch_length(batch))
            finally:
                for model in self.context.models:
                    model.wrapped.train()
        if averager.batches == 0:
            raise RuntimeError("the validation data loader is empty")
        averaged = averager.averaged(self.dist)
        self.core.train.report_validation_metrics(self.batches_trained, averaged)
        self.writer.write("validation", self.batches_trained, averaged)
        self.writer.flush()
        self.last_validation = (self.batches_trained, averaged)
        log.info("validation after %d batches: %s", self.batches_trained, _brief(averaged))
        return averaged

    def _validation_now(self) -> dict[str, float]:
        """The validation at the current step, running it unless it ran already."""
        if self.last_validation is not None and self.last_validation[0] == self.batches_trained:
            return self.last_validation[1]
        return self._validate()

    def _searcher_metric(self, metrics: dict[str, float]) -> float:
        name = self.config.searcher.metric
        if name not in metrics:
            raise RuntimeError(
                f"the searcher metric {name!r} (searcher.metric) is not among the validation "
                f"metrics evaluate_batch returned: {', '.join(sorted(metrics)) or 'none'}"
            )
        return metrics[name]

    # ---- checkpoints ---------------------------------------------------------------------------

    def _checkpoint_if_new(self) -> None:
        if self.last_checkpoint_step != self.batches_trained:
            self._checkpoint()

    def _checkpoint(self) -> None:
        self._flush_training()
        workers = self.dist.gather(self.batches.state())
        if self.dist.is_chief:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "models": [model.model.state_dict() for model in self.context.models],
                "optimizers": [optimizer.state_dict() for optimizer in self.context.optimizers],
                "lr_schedulers": [s.scheduler.state_dict() for s in self.context.lr_schedulers],
                "trainer": {
                    "batches_trained": self.batches_trained,
                    "last_validation": self.last_validation,
                },
                "workers": workers,
            }
            metadata = {
                "steps_completed": self.batches_trained,
                "framework": "torch",
                "format": f"harness.pytorch/{CHECKPOINT_FORMAT}",
                "experiment_id": self.core.info.experiment_id,
                "trial_id": self.core.info.trial_id,
                "epoch_idx": self.batches.epoch_idx,
            }
            with self.core.checkpoint.store_path(metadata) as (path, uuid):
                torch.save(payload, path / CHECKPOINT_FILE)
            self.writer.flush()
            self.last_checkpoint_uuid = uuid
            log.info("checkpoint %s after %d batches", uuid, self.batches_trained)
        self.last_checkpoint_step = self.batches_trained

    def _load(self, uuid: str, purpose: str) -> dict[str, Any]:
        """The trainer's payload in checkpoint ``uuid`` (``purpose``: "resume", "warm-start")."""
        with self.core.checkpoint.restore_path(uuid) as path:
            file = path / CHECKPOINT_FILE
            if not file.is_file():
                raise RuntimeError(
                    f"checkpoint {uuid} has no {CHECKPOINT_FILE}: it was not written by the "
                    f"harness.pytorch trainer, which cannot {purpose} from it"
                )
            # Our own file: it holds numpy and Python RNG states besides tensors.
            payload: dict[str, Any] = torch.load(file, map_location="cpu", weights_only=False)
        return payload

    def _warm_start(self, uuid: str) -> None:
        """Determined's warm start: the models' weights from ``uuid`` (another trial's
        checkpoint), nothing else. Optimizers, LR schedulers, random generators and the data
        order start as in a fresh trial, and training counts from batch 0."""
        payload = self._load(uuid, "warm-start")
        models = self.context.models
        if len(payload["models"]) != len(models):
            raise RuntimeError(
                f"cannot warm-start: checkpoint {uuid} holds {len(payload['models'])} models "
                f"(context.wrap_model), the trial wraps {len(models)}"
            )
        for model, state in zip(models, payload["models"], strict=True):
            model.model.load_state_dict(state)
        trained = payload.get("trainer", {}).get("batches_trained")
        log.info(
            "warm start: model weights from checkpoint %s (%s batches trained); optimizer and "
            "counters start fresh, training from batch 0",
            uuid,
            trained,
        )

    def _restore(self, uuid: str) -> None:
        payload = self._load(uuid, "resume")
        ctx = self.context
        _check_count("models (context.wrap_model)", payload["models"], ctx.models)
        _check_count("optimizers (context.wrap_optimizer)", payload["optimizers"], ctx.optimizers)
        _check_count("LR schedulers", payload["lr_schedulers"], ctx.lr_schedulers)
        for model, state in zip(ctx.models, payload["models"], strict=True):
            model.model.load_state_dict(state)
        for optimizer, state in zip(ctx.optimizers, payload["optimizers"], strict=True):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(ctx.lr_schedulers, payload["lr_schedulers"], strict=True):
            scheduler.scheduler.load_state_dict(state)
        trainer = payload["trainer"]
        self.batches_trained = int(trainer["batches_trained"])
        last = trainer.get("last_validation")
        self.last_validation = (int(last[0]), dict(last[1])) if last else None
        self.last_checkpoint_step = self.batches_trained
        self.last_checkpoint_uuid = uuid
        workers: list[dict[str, Any]] = payload["workers"]
        if len(workers) == self.dist.size:
            mine = workers[self.dist.rank]
        else:
            log.warning(
                "checkpoint %s was written by %d workers, this run has %d: the data order "
                "differs from an uninterrupted run from here on",
                uuid,
                len(workers),
                self.dist.size,
            )
            mine = workers[0]
        self.batches.restore(mine)
        log.info("resumed from checkpoint %s at batch %d", uuid, self.batches_trained)

    # ---- setup ---------------------------------------------------------------------------------

    def _loaders(self) -> tuple[DataLoader[Any], DataLoader[Any]]:
        train = self.trial.build_training_data_loader()
        val = self.trial.build_validation_data_loader()
        for name, loader in (
            ("build_training_data_loader", train),
            ("build_validation_data_loader", val),
        ):
            if not isinstance(loader, DataLoader):
                raise TypeError(
                    f"{name}() must return a torch.utils.data.DataLoader, got "
                    f"{type(loader).__name__}"
                )
        ctx = self.context
        size = self.dist.size
        configured = ctx._global_batch_size
        if size == 1:
            per_slot = train.batch_size or configured
            if configured and train.batch_size and configured != train.batch_size:
                log.warning(
                    "the training DataLoader's batch size %d differs from "
                    "hyperparameters.global_batch_size %d: counting records and epochs with %d",
                    train.batch_size,
                    configured,
                    train.batch_size,
                )
        else:
            per_slot = configured // size if configured else train.batch_size
            if configured and configured % size:
                log.warning(
                    "global_batch_size %d does not split evenly over %d workers: using %d per "
                    "worker",
                    configured,
                    size,
                    per_slot,
                )
        if not per_slot:
            raise RuntimeError(
                "the batch size is unknown: set hyperparameters.global_batch_size or give the "
                "training DataLoader a batch_size"
            )
        if size > 1:
            rank = self.dist.rank
            train = shard_loader(train, rank=rank, size=size, batch_size=per_slot, seed=self.seed)
            val = shard_loader(
                val,
                rank=rank,
                size=size,
                batch_size=val.batch_size or per_slot,
                seed=self.seed,
                shuffle=False,
            )
        ctx._global_batch_size = per_slot * size
        return train, val


def _default_device(dist: DistributedContext) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def _check_count(what: str, saved: list[Any], current: list[Any]) -> None:
    if len(saved) != len(current):
        raise RuntimeError(
            f"cannot resume: the checkpoint holds {len(saved)} {what}, the trial wraps "
            f"{len(current)} now"
        )


def _brief(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.4g}" for name, value in metrics.items())


def run_trial(trial_class: type[Trial], core: Context | None = None) -> Outcome:
    """Run ``trial_class`` as this process's trial (``python -m harness.launch`` calls this)."""
    if core is not None:
        return Trainer(trial_class, core).run()
    with harness.core.init() as context:
        return Trainer(trial_class, context).run()
