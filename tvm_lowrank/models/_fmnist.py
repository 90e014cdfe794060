"""Small Fashion-MNIST CNNs (1x28x28 in, 10 classes): the demo inputs for low-rank compression.

Each conv is followed by BatchNorm, so the conv has no bias (BN's shift replaces it and the
frontend can fold BN into the conv); they differ in what the compiler must handle: plain 3x3
stacks (VGG), strided 3x3 with 1x1 shortcuts and residual adds (ResNet), depthwise + pointwise
(MobileNet).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._registry import register_model

FMNIST_INPUT_SHAPE = (1, 1, 28, 28)
NUM_CLASSES = 10


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _classifier(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, NUM_CLASSES))


class VGGFashion(nn.Module):
    """Six 3x3 convs (32-32 | pool | 64-64 | pool | 128-128), global average pool, linear."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            layers += [conv_bn_relu(in_channels, width), conv_bn_relu(width, width)]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = _classifier(in_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block; a stride or width change gets a 1x1 strided conv + BN shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNetFashion(nn.Module):
    """3x3 stem, then one basic block per stage (16 | 32 /2 | 64 /2), global average pool, linear."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.stem = conv_bn_relu(1, widths[0])
        blocks, in_channels = [], widths[0]
        for stage, width in enumerate(widths):
            blocks.append(BasicBlock(in_channels, width, stride=1 if stage == 0 else 2))
            in_channels = width
        self.layers = nn.Sequential(*blocks)
        self.classifier = _classifier(in_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.layers(self.stem(x)))


def depthwise_separable(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """MobileNet-v1 block: 3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""
    return nn.Sequential(conv_bn_relu(in_channels, in_channels, 3, stride, groups=in_channels),
                         conv_bn_relu(in_channels, out_channels, 1))


class MobileNetFashion(nn.Module):
    """3x3 stem (16), depthwise-separable blocks 16→32→64/2→64→128/2, global average pool, linear."""

    BLOCKS = ((16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2))

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(1, self.BLOCKS[0][0])
        self.blocks = nn.Sequential(*(depthwise_separable(i, o, s) for i, o, s in self.BLOCKS))
        self.classifier = _classifier(self.BLOCKS[-1][1])

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.blocks(self.stem(x)))


@register_model("vgg-fmnist", FMNIST_INPUT_SHAPE)
def vgg_fmnist() -> nn.Module:
    return VGGFashion()


@register_model("resnet-fmnist", FMNIST_INPUT_SHAPE)
def resnet_fmnist() -> nn.Module:
    return ResNetFashion()


@register_model("mobilenet-fmnist", FMNIST_INPUT_SHAPE)
def mobilenet_fmnist() -> nn.Module:
    return MobileNetFashion()


@register_model("vgg-fmnist-deeptwist", FMNIST_INPUT_SHAPE)
def vgg_fmnist_deeptwist() -> nn.Module:
    """vgg-fmnist's structure; its weights are vgg-fmnist fine-tuned with DeepTwist distortion at
    Tai macs:0.25, so the compiler's Tai decomposition at that policy loses nothing (the demo)."""
    return VGGFashion()
