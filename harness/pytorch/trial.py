"""The class users write: a model, its data, one training step and one evaluation step.

Everything else — the loop, how long to train, validating, checkpointing, resuming, reporting,
distributing over several slots — is the trainer's (``harness.pytorch.trainer``), so the same
class runs on one CPU or across GPUs and survives preemption without code of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch.utils.data import DataLoader

from harness.pytorch.context import TrialContext


class Trial(ABC):
    """Subclass this and name it in the experiment config: ``entrypoint: model_def:MyTrial``.

    ``__init__(self, context)`` builds the model, optimizer and anything else, wrapping them
    with ``context.wrap_model`` / ``context.wrap_optimizer`` (/ ``context.wrap_lr_scheduler``)
    so the trainer can move, distribute, save and restore them.
    """

    def __init__(self, context: TrialContext) -> None:
        self.context = context

    @abstractmethod
    def build_training_data_loader(self) -> DataLoader[Any]:
        """Training data; shuffle here if you want it shuffled. Batch size:
        ``context.get_per_slot_batch_size()``."""

    @abstractmethod
    def build_validation_data_loader(self) -> DataLoader[Any]:
        """Validation data; every validation goes through all of it."""

    @abstractmethod
    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        """Train on one batch (already on ``context.device``): forward, ``context.backward(loss)``,
        ``context.step_optimizer(optimizer)``. Returns metrics (name -> number or one-element
        tensor), averaged over batches and workers when reported. ``batch_idx`` counts batches
        since the start of training (not of the epoch), as in Determined."""

    @abstractmethod
    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        """Metrics of one validation batch (run under ``torch.no_grad()`` with the models in
        eval mode); averaged over all records of the validation set, weighted by batch size."""
