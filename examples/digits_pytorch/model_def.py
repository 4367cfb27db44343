"""Handwritten digits with the Flotilla PyTorch trainer: Determined's mnist_pytorch, on a disk
near you.

scikit-learn ships the 8x8 digits data set (1797 images, 10 classes) inside the package, so this
example trains without downloading anything. The network is mnist_pytorch's, shrunk to the
smaller images: two convolutions, max pooling, dropout, two dense layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import harness.pytorch

# Images kept aside for validation (20%), the same split in every trial.
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_datasets() -> tuple[TensorDataset, TensorDataset]:
    """(training, validation) datasets of (image 1x8x8 in [0, 1], label)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        range(len(labels)),
        test_size=VALIDATION_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[val_idx], labels[val_idx]),
    )


def build_model(hparams: dict[str, Any]) -> nn.Module:
    n1, n2 = int(hparams["n_filters1"]), int(hparams["n_filters2"])
    return nn.Sequential(
        nn.Conv2d(1, n1, kernel_size=3),  # 8x8 -> 6x6
        nn.ReLU(),
        nn.Conv2d(n1, n2, kernel_size=3),  # -> 4x4
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> 2x2
        nn.Dropout(float(hparams["dropout1"])),
        nn.Flatten(),
        nn.Linear(n2 * 2 * 2, 128),
        nn.ReLU(),
        nn.Dropout(float(hparams["dropout2"])),
        nn.Linear(128, 10),
        nn.LogSoftmax(dim=1),
    )


class DigitsTrial(harness.pytorch.Trial):
    def __init__(self, context: harness.pytorch.TrialContext) -> None:
        super().__init__(context)
        self.train_data, self.val_data = load_digits_datasets()
        self.model = context.wrap_model(build_model(context.hparams))
        self.optimizer = context.wrap_optimizer(
            torch.optim.Adadelta(self.model.parameters(), lr=context.get_hparam("learning_rate"))
        )

    def build_training_data_loader(self) -> DataLoader[Any]:
        return DataLoader(
            self.train_data, batch_size=self.context.get_per_slot_batch_size(), shuffle=True
        )

    def build_validation_data_loader(self) -> DataLoader[Any]:
        return DataLoader(self.val_data, batch_size=self.context.get_per_slot_batch_size())

    def train_batch(self, batch: Any, epoch_idx: int, batch_idx: int) -> dict[str, Any]:
        images, labels = batch
        loss = nn.functional.nll_loss(self.model(images), labels)
        self.context.backward(loss)
        self.context.step_optimizer(self.optimizer)
        return {"loss": loss}

    def evaluate_batch(self, batch: Any) -> dict[str, Any]:
        images, labels = batch
        output = self.model(images)
        loss = nn.functional.nll_loss(output, labels)
        accuracy = (output.argmax(dim=1) == labels).float().mean()
        return {"validation_loss": loss, "accuracy": accuracy}
