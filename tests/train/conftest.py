"""Fixtures of the training-method tests: scikit-learn's 8×8 digits and a tiny VGG-style net.

Tiny on purpose (1397 training images, a few thousand MACs per image): a whole method runs in a
second or two on one core, yet learns far above chance (10%)."""

import pytest
import torch

from tvm_lowrank.models._fmnist import VGGFashion
from tvm_lowrank.train import TrainSettings, load_dataset, train_dense

TINY_WIDTHS = (8, 16, 16)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def tiny_vgg():
    """A factory of the tiny VGG-style architecture (fresh weights each call)."""
    return lambda: VGGFashion(TINY_WIDTHS)


@pytest.fixture(scope="session")
def trained_tiny(digits, tiny_vgg):
    """The tiny net trained dense (3 epochs): what the fine-tuning methods start from."""
    torch.manual_seed(0)
    return train_dense(tiny_vgg, digits, TrainSettings(epochs=3, batch_size=64, lr=3e-3))
