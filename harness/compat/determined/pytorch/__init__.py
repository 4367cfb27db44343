"""``det.pytorch``: Determined's ``PyTorchTrial`` API, run by Flotilla's PyTorch trainer.

``PyTorchTrial`` and ``PyTorchTrialContext`` are ``harness.pytorch.Trial`` and ``TrialContext``
(same methods: ``wrap_model``, ``wrap_optimizer``, ``backward``, ``step_optimizer``,
``get_hparam``, ``get_per_slot_batch_size``, …); ``DataLoader`` is torch's, which is what
Determined's wrapper builds. An ``entrypoint: model_def:MyTrial`` runs the class.
"""

from typing import Any

import torch
import torch.utils.data

from harness.pytorch import LRStepMode, Trial, TrialContext

from .._unsupported import missing, unsupported

PyTorchTrial = Trial
PyTorchTrialContext = TrialContext

TorchData = dict[str, torch.Tensor] | list[torch.Tensor] | tuple[torch.Tensor, ...] | torch.Tensor


class DataLoader(torch.utils.data.DataLoader[Any]):
    """Determined's ``det.pytorch.DataLoader`` takes torch's arguments; so does this one
    (the trainer shards it across workers and resumes it mid-epoch)."""


class LRScheduler:
    """Only ``LRScheduler.StepMode``, for ``context.wrap_lr_scheduler(scheduler, step_mode)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        unsupported(
            "det.pytorch.LRScheduler(...)",
            "call context.wrap_lr_scheduler(scheduler, step_mode) with the torch scheduler",
        )

    class StepMode:
        STEP_EVERY_EPOCH = LRStepMode.EPOCH
        STEP_EVERY_BATCH = LRStepMode.BATCH
        MANUAL_STEP = LRStepMode.MANUAL


__all__ = ["DataLoader", "LRScheduler", "PyTorchTrial", "PyTorchTrialContext", "TorchData"]

__getattr__ = missing(__name__)
