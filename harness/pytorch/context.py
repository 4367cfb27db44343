"""What a :class:`~harness.pytorch.Trial` gets: its hyperparameters and the means to hand its
model, optimizers and schedulers to the trainer.

Wrapping is how the trainer learns what to move to the device, to distribute and to checkpoint;
whatever is not wrapped is the trial's own business and not restored on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import nn

from harness.core import Context
from harness.core.distributed import DistributedContext
from harness.pytorch.data import to_device


class LRStepMode(StrEnum):
    """When the trainer calls ``scheduler.step()``."""

    BATCH = "batch"  # after every batch
    EPOCH = "epoch"  # after every pass over the training data
    MANUAL = "manual"  # never: the trial steps it (it is still checkpointed)


@dataclass
class WrappedModel:
    model: nn.Module  # what the user built; its state_dict is what checkpoints hold
    wrapped: nn.Module  # what the user calls (DistributedDataParallel with several workers)


@dataclass
class WrappedScheduler:
    scheduler: Any
    step_mode: LRStepMode


class TrialContext:
    """Hyperparameters, the device, and wrapping; see docs/trainer.md."""

    def __init__(self, core: Context, device: torch.device, seed: int) -> None:
        self.core = core
        self.hparams: dict[str, Any] = core.hparams
        self.distributed: DistributedContext = core.distributed
        self.device = device
        self.seed = seed
        self.models: list[WrappedModel] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_schedulers: list[WrappedScheduler] = []
        self._global_batch_size = _hparam_batch_size(self.hparams)

    # ---- who and what ------------------------------------------------------------------------

    def get_hparams(self) -> dict[str, Any]:
        return self.hparams

    def get_hparam(self, name: str) -> Any:
        if name not in self.hparams:
            raise KeyError(
                f"no hyperparameter {name!r} in this trial (it has: "
                f"{', '.join(sorted(self.hparams)) or 'none'})"
            )
        return self.hparams[name]

    def get_experiment_id(self) -> int:
        return self.core.info.experiment_id

    def get_trial_id(self) -> int:
        return self.core.info.trial_id

    def get_experiment_config(self) -> dict[str, Any]:
        return self.core.info.config

    def get_data_config(self) -> dict[str, Any]:
        """The experiment config's ``data`` section (``{}`` without one), as in Determined."""
        data = self.core.info.config.get("data")
        return dict(data) if isinstance(data, dict) else {}

    def get_global_batch_size(self) -> int:
        """Records per batch over all workers: ``hyperparameters.global_batch_size``."""
        if self._global_batch_size is None:
            raise RuntimeError(
                "the global batch size is unknown: set hyperparameters.global_batch_size (or "
                "build the data loaders with a batch size of your choosing, per worker)"
            )
        return self._global_batch_size

    def get_per_slot_batch_size(self) -> int:
        """Records per batch on this worker: the global batch size split across workers."""
        return max(1, self.get_global_batch_size() // self.distributed.size)

    # ---- wrapping ----------------------------------------------------------------------------

    def wrap_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and, with several workers, wrap it in
        ``DistributedDataParallel``; use what this returns for forward passes."""
        model = model.to(self.device)
        wrapped: nn.Module = model
        if self.distributed.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=device_ids)
        self.models.append(WrappedModel(model=model, wrapped=wrapped))
        return wrapped

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Register ``optimizer`` so its state is checkpointed and restored."""
        self.optimizers.append(optimizer)
        return optimizer

    def wrap_lr_scheduler(self, scheduler: Any, step_mode: LRStepMode | str = "batch") -> Any:
        """Register an LR scheduler; the trainer steps it per ``step_mode`` and checkpoints it."""
        self.lr_schedulers.append(WrappedScheduler(scheduler, LRStepMode(step_mode)))
        return scheduler

    # ---- in train_batch ----------------------------------------------------------------------

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward()``; with several workers gradients are averaged across them."""
        loss.backward(**kwargs)

    def step_optimizer(
        self,
        optimizer: torch.optim.Optimizer,
        clip_grads: Callable[[Iterable[nn.Parameter]], Any] | None = None,
    ) -> None:
        """``optimizer.step()`` then ``optimizer.zero_grad()``; ``clip_grads(params)`` first if
        given (e.g. ``lambda p: torch.nn.utils.clip_grad_norm_(p, 1.0)``)."""
        if clip_grads is not None:
            clip_grads([p for group in optimizer.param_groups for p in group["params"]])
        optimizer.step()
        optimizer.zero_grad()

    def to_device(self, obj: Any) -> Any:
        """Tensors in ``obj`` (nested lists, tuples, dicts) on this worker's device."""
        return to_device(obj, self.device)


def _hparam_batch_size(hparams: dict[str, Any]) -> int | None:
    value = hparams.get("global_batch_size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"hyperparameters.global_batch_size must be an integer >= 1, got {value!r}"
        )
    return value
