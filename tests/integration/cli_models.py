"""A tiny model for the end-to-end CLI tests, importable as "cli_models:tiny_cnn"."""

import torch
from torch import nn


def tiny_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()
    return model, torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
