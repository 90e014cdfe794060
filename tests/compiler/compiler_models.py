"""Tiny CNNs covering what the compiler must handle: plain k×k convs, strides, 1×1 downsamples and
residual adds, depthwise convs, and chains that a low-rank model already contains.

Importable as "compiler_models:<factory>" (pytest puts this folder on sys.path), which is how the
"module:function" model spec is tested.
"""

import torch
from torch import nn

INPUT_SHAPE = (1, 3, 16, 16)


def _randomise_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so that folding them is actually tested."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.1)
    return model.eval()


def conv_bn(in_channels, out_channels, kernel=3, stride=1, padding=1, groups=1, dilation=1):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class TinyVGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8), conv_bn(8, 16), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(16, 12, (3, 5), padding=(1, 2)),
        )
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.conv1 = conv_bn(8, 16, stride=2)
        self.conv2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.downsample = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))

    def forward(self, x):
        x = self.stem(x)
        return torch.relu(self.conv2(self.conv1(x)) + self.downsample(x))


class TinyMobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            conv_bn(3, 8, stride=2), conv_bn(8, 8, groups=8), conv_bn(8, 16, kernel=1, padding=0),
            conv_bn(16, 16, groups=16), nn.Conv2d(16, 16, 3, padding=1),
        )

    def forward(self, x):
        return self.layers(x)


class AlreadyLowRank(nn.Module):
    """A dense conv, an exported Tai pair (bias on both stages, as a folded BN between them leaves
    it), a CP chain, and a lone 3×1 conv that belongs to no chain."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Conv2d(3, 8, 3, padding=1)
        self.vertical = nn.Conv2d(8, 4, (3, 1), padding=(1, 0))
        self.horizontal = nn.Conv2d(4, 8, (1, 3), padding=(0, 1))
        self.cp = nn.Sequential(
            nn.Conv2d(8, 5, 1, bias=False), nn.Conv2d(5, 5, (3, 1), padding=(1, 0), groups=5, bias=False),
            nn.Conv2d(5, 5, (1, 3), padding=(0, 1), groups=5, bias=False), nn.Conv2d(5, 8, 1),
        )
        self.lone = nn.Conv2d(8, 8, (3, 1), padding=(1, 0))

    def forward(self, x):
        x = torch.relu(self.dense(x))
        x = torch.relu(self.horizontal(self.vertical(x)))
        x = torch.relu(self.cp(x))
        return torch.relu(self.lone(x))


def make(cls, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise_batchnorms(cls(), seed)


def example_input(seed: int = 1) -> torch.Tensor:
    return torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def vgg_factory():
    """The "module:function" form: returns (model, example input)."""
    return make(TinyVGG), example_input()


def broken_factory():
    return "not a model"
