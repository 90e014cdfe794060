"""Tiny models for the tuning tests, importable as "tune_models:<factory>" (pytest puts this folder on
sys.path): two 3×3 convs on an 8×8 input, two tasks of a few microseconds each."""

import torch
from torch import nn

INPUT_SHAPE = (1, 8, 8, 8)


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(8, 8, 3, padding=1)
        self.second = nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.second(torch.relu(self.first(x))))


class FirstConvOnly(nn.Module):
    """TwoConvs' first layer alone (other weights): its kernel is the same workload."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.first(x))


class SecondConvOnly(nn.Module):
    """TwoConvs' second layer alone (other weights), as the build compiles it: its input padded by
    the first layer's kernel (`PadConvInputsAtProducer`), so the conv itself pads nothing. Its
    kernel is the same workload as TwoConvs' second."""

    def __init__(self):
        super().__init__()
        self.second = nn.Conv2d(8, 16, 3, padding=0)

    def forward(self, x):
        return torch.relu(self.second(x))


def example_input() -> torch.Tensor:
    return torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(1))


def two_convs():
    """The "module:function" form: (model, example input)."""
    torch.manual_seed(0)
    return TwoConvs().eval(), example_input()


def first_conv_only():
    torch.manual_seed(1)
    return FirstConvOnly().eval(), example_input()


def second_conv_only():
    torch.manual_seed(2)
    n, c, h, w = INPUT_SHAPE
    return SecondConvOnly().eval(), torch.randn((n, c, h + 2, w + 2), generator=torch.Generator().manual_seed(2))
