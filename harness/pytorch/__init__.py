"""The PyTorch trainer: write a :class:`Trial`, the trainer does the rest (docs/trainer.md).

.. code:: python

    class MyTrial(harness.pytorch.Trial):
        def __init__(self, context: harness.pytorch.TrialContext) -> None: ...
        def build_training_data_loader(self) -> DataLoader: ...
        def build_validation_data_loader(self) -> DataLoader: ...
        def train_batch(self, batch, epoch_idx: int, batch_idx: int) -> dict[str, float]: ...
        def evaluate_batch(self, batch) -> dict[str, float]: ...
"""

from harness.core import InvalidHP
from harness.pytorch.context import LRStepMode, TrialContext
from harness.pytorch.trainer import Outcome, Trainer, run_trial
from harness.pytorch.trial import Trial

__all__ = ["InvalidHP", "LRStepMode", "Outcome", "Trainer", "Trial", "TrialContext", "run_trial"]
