"""The task: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), loaded once into tensors.

No download and no DataLoader: the whole set is four tensors. The split is a fixed stratified 80/20 split chosen by
`data_seed`; pixels are standardised with the training set's mean and standard deviation (one scalar each, so the
spatial structure the convolutions need is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsData:
    """Train and validation tensors. Shared between worlds: never modify them in place."""

    x_train: torch.Tensor
    """[N_train, 1, 8, 8] float32, standardised."""
    y_train: torch.Tensor
    """[N_train] int64 class labels."""
    x_val: torch.Tensor
    """[N_val, 1, 8, 8] float32, standardised with the training statistics."""
    y_val: torch.Tensor
    """[N_val] int64 class labels."""

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.y_val.shape[0])


@lru_cache(maxsize=8)
def load_digits_data(data_seed: int = 0) -> DigitsData:
    """The digits split for `data_seed`, computed once per process and cached."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)  # [1797, 64] float64 in 0..16, [1797] int
    x_tr, x_va, y_tr, y_va = train_test_split(
        images, labels, test_size=VALIDATION_FRACTION, stratify=labels, random_state=data_seed
    )
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return DigitsData(
        x_train=_to_images(x_tr, mean, std),
        y_train=torch.as_tensor(y_tr, dtype=torch.int64),
        x_val=_to_images(x_va, mean, std),
        y_val=torch.as_tensor(y_va, dtype=torch.int64),
    )


def _to_images(flat: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """[N, 64] raw pixels -> [N, 1, 8, 8] float32 standardised."""
    x = torch.as_tensor((flat - mean) / std, dtype=torch.float32)
    return x.reshape(-1, *IMAGE_SHAPE).contiguous()  # [N, 1, 8, 8]
