"""The data set: scikit-learn's 8x8 digits (bundled with it, so nothing is downloaded)."""

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset


def get_dataset(train: bool) -> TensorDataset:
    images, labels = load_digits(return_X_y=True)
    images = (images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    split = int(len(images) * 0.8)
    part = slice(0, split) if train else slice(split, None)
    return TensorDataset(torch.from_numpy(images[part]), torch.from_numpy(labels[part]))
