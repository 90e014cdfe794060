"""ImageNet-sized architectures for speed benchmarks (no bundled weights: nothing is downloaded).

Latency does not depend on the weights' values, and the compiler's rank policies by MAC or
parameter ratio pick the same ranks for any weights, so seeded random weights stand in.
"""

from __future__ import annotations

import torch
from torch import nn

from ._fmnist import BasicBlock
from ._registry import register_model

IMAGENET_INPUT_SHAPE = (1, 3, 224, 224)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016): 7x7/2 stem, 3x3/2 max-pool, 2 basic blocks per stage
    (64 | 128 /2 | 256 /2 | 512 /2), global average pool, 1000-way linear: 1.8 GMACs at 224²."""

    WIDTHS = (64, 128, 256, 512)

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        blocks, in_channels = [], 64
        for stage, width in enumerate(self.WIDTHS):
            blocks += [BasicBlock(in_channels, width, stride=1 if stage == 0 else 2), BasicBlock(width, width)]
            in_channels = width
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(self.stem(x)))


@register_model("resnet18", IMAGENET_INPUT_SHAPE, trained=False)
def resnet18() -> nn.Module:
    torch.manual_seed(0)  # the same stand-in weights in every process
    return ResNet18()
