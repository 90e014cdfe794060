"""What the training methods share: data, training by steps or phases, accuracy and cost.

Every method trains through `tvm_lowrank.models.train_classifier` (one loop for the whole project);
this module only cuts the data into the pieces the methods need: a number of steps (fine-tuning
between two decompositions) or a sequence of phases (ATCD's alternation, where each phase changes
the parameter set, so each gets a fresh optimiser, as `Rank1Conv2d` requires after a switch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import TrainingError
from ..models.training import evaluate_accuracy, train_classifier
from ..nn import Rank1Conv2d

DATASETS = ("fashion-mnist", "digits")


@dataclass(frozen=True)
class Dataset:
    """Normalised float32 NCHW images and int64 labels, a training and a test split."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def example(self) -> torch.Tensor:
        """One real test image, batch 1: the example input for export, costs and the compiler."""
        return torch.from_numpy(self.test_images[:1].copy())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.test_images.shape[1:])


def load_dataset(name: str = "fashion-mnist", train_limit: int | None = None,
                 test_limit: int | None = None) -> Dataset:
    """Fashion-MNIST (Debian's package; the first `train_limit` / `test_limit` images of each split)
    or scikit-learn's 8×8 digits (a fixed 1397/400 split), for quick tests."""
    if name == "fashion-mnist":
        from ..data import load_fashion_mnist

        train = load_fashion_mnist("train", limit=train_limit)
        test = load_fashion_mnist("test", limit=test_limit)
        return Dataset(name, *train, *test)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = ((digits.images / 16.0 - 0.3) / 0.4).astype(np.float32)[:, None]
        labels = digits.target.astype(np.int64)
        order = np.random.default_rng(0).permutation(len(labels))
        train, test = order[:1397][:train_limit], order[1397:][:test_limit]
        return Dataset(name, images[train], labels[train], images[test], labels[test])
    raise TrainingError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


class BatchStream:
    """Training images in a seeded order, epoch after epoch, handed out a number of steps at a time.

    Consecutive calls continue where the last stopped, so a run cut into phases sees the same
    images in the same order as one uninterrupted run would.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int = 0):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self._rng = np.random.default_rng(seed)
        self._order = np.zeros(0, dtype=np.int64)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.labels) // self.batch_size))

    def take(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        wanted = steps * self.batch_size
        while len(self._order) < wanted:
            self._order = np.concatenate([self._order, self._rng.permutation(len(self.labels))])
        chosen, self._order = self._order[:wanted], self._order[wanted:]
        return self.images[chosen], self.labels[chosen]


@dataclass
class TrainSettings:
    """How long and how fast: shared by every method (each reads what it needs)."""

    epochs: float = 1.0
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0

    def total_steps(self, stream: BatchStream) -> int:
        return max(1, round(self.epochs * stream.steps_per_epoch))


def train_steps(model: nn.Module, stream: BatchStream, steps: int, lr: float, seed: int = 0,
                on_step=None) -> float:
    """Train `steps` optimiser steps on the stream's next images (one one-cycle run); mean loss."""
    images, labels = stream.take(steps)
    losses = train_classifier(model, images, labels, epochs=1, batch_size=stream.batch_size, lr=lr,
                              seed=seed, on_step=on_step)
    return losses[-1]


def train_phases(model: nn.Module, stream: BatchStream, phase_steps: list[int], lr: float, seed: int = 0,
                 before_phase=None) -> list[float]:
    """Train a sequence of phases; `before_phase(index)` may change the parameter set, which is why
    each phase builds its own optimiser (and learning-rate cycle). Returns each phase's mean loss."""
    losses = []
    for index, steps in enumerate(phase_steps):
        if before_phase is not None:
            before_phase(index)
        losses.append(train_steps(model, stream, steps, lr, seed=seed + index))
    return losses


@dataclass
class Cost:
    """Multiply-accumulates per image and weights of the deployed form (convs and linear layers)."""

    macs: int
    params: int

    def ratio_to(self, dense: "Cost") -> tuple[float, float]:
        """(dense MACs / these MACs, dense params / these params): the compression factors."""
        return dense.macs / self.macs, dense.params / self.params


def model_cost(model: nn.Module, example: torch.Tensor) -> Cost:
    """Count the deployed cost on `example`: chain stages count as the convs they are, a
    `Rank1Conv2d` as its decomposed chain whatever its mode; BatchNorm and biases are not counted."""
    macs, params, hooks = [0], [0], []

    def conv_hook(module, inputs, output):
        macs[0] += output[0].numel() * module.weight[0].numel()

    def linear_hook(module, inputs, output):
        macs[0] += output[0].numel() * module.in_features

    def rank1_hook(module, inputs, output):
        macs[0] += module.flops(tuple(inputs[0].shape[-2:]))

    for module in model.modules():
        if isinstance(module, Rank1Conv2d):
            hooks.append(module.register_forward_hook(rank1_hook))
            params[0] += sum(p.numel() for p in module._factor_parameters())
        elif isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(conv_hook))
            params[0] += module.weight.numel()
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear_hook))
            params[0] += module.weight.numel()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return Cost(macs[0], params[0])


@dataclass
class TrainedModel:
    """A method's result: the deployable model (eval mode), its test accuracy and what happened."""

    method: str
    model: nn.Module
    accuracy: float
    cost: Cost
    history: dict = field(default_factory=dict)


CALIBRATION_IMAGES = 4096


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                          batches: int = 40) -> None:
    """Re-estimate BatchNorm running statistics for the current (distorted) weights."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    for start in range(0, min(len(images), batch_size * batches), batch_size):
        model(images[start:start + batch_size])
    model.eval()


def finish(method: str, model: nn.Module, data: Dataset, history: dict | None = None,
           calibrate: bool = False) -> TrainedModel:
    """Evaluate and cost a trained model; `calibrate` first re-estimates BatchNorm statistics on
    training images (after a decomposition or a short fine-tune the running averages lag behind)."""
    if calibrate:
        recalibrate_batchnorm(model, torch.from_numpy(data.train_images[:CALIBRATION_IMAGES].copy()))
    model.eval()
    return TrainedModel(method, model, evaluate_accuracy(model, data.test_images, data.test_labels),
                        model_cost(model, data.example), history or {})
