"""A minimal, seeded classifier training loop and accuracy check on in-memory arrays.

Kept free of framework state so that bundled-model training, fine-tuning after decomposition
(``tvm_lowrank.train``) and accuracy checks share one loop.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def train_classifier(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int = 1,
                     batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
                     weight_decay: float = 5e-4, on_step=None) -> list[float]:
    """Train `model` in place with AdamW and a one-cycle schedule; return the mean loss per epoch.

    `on_step(step)` runs after each optimiser step (e.g. a DeepTwist distortion).

    One-cycle reaches a good accuracy in very few epochs, which keeps training within a
    minute or two on a laptop-class CPU. `seed` fixes the batch order (model init is the caller's).
    """
    x, y = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(np.asarray(labels))
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    epoch_losses, step = [], 0
    for _ in range(epochs):
        order, total = torch.randperm(len(x), generator=generator), 0.0
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if on_step is not None:
                on_step(step)
            step += 1
            total += loss.item() * len(batch)
        epoch_losses.append(total / len(x))
    model.eval()
    return epoch_losses


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Class index per image, in eval mode (BatchNorm uses its running statistics)."""
    was_training = model.training
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(images))
    predictions = [model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(predictions).numpy()


def evaluate_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((predict(model, images) == np.asarray(labels)).mean())
