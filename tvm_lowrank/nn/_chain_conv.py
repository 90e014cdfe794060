"""`ChainConv2d`: any :class:`~tvm_lowrank.decompose.ConvChain` as a PyTorch module.

The method-specific layers (Tai, CP, rank-1, Tucker-2) are thin wrappers around this one, and the
compiler builds its PyTorch low-rank reference from it, so PyTorch and TVM run the same chain.
"""

from __future__ import annotations

import torch
from torch import nn

from ..decompose import ConvChain, ConvGeometry


def stage_conv(weight, groups: int, geometry: ConvGeometry, bias=None) -> nn.Conv2d:
    """An `nn.Conv2d` holding one stage; asymmetric padding is not expressible and is rejected."""
    top, left, bottom, right = geometry.padding
    if (top, left) != (bottom, right):
        raise ValueError(f"nn.Conv2d cannot express asymmetric padding {geometry.padding}")
    out_channels, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_per_group * groups, out_channels, (kh, kw), stride=geometry.stride, padding=(top, left),
        dilation=geometry.dilation, groups=groups, bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(weight, dtype=conv.weight.dtype))
        if bias is not None:
            conv.bias.copy_(torch.as_tensor(bias, dtype=conv.bias.dtype))
    return conv


class ChainConv2d(nn.Sequential):
    """The stages of a chain as consecutive convs; the dense conv's bias goes on the last stage."""

    def __init__(self, chain: ConvChain, geometry: ConvGeometry = ConvGeometry(), bias=None):
        last = len(chain.stages) - 1
        super().__init__(*(
            stage_conv(stage.weight, stage.groups, geometry.restricted_to(stage.axes),
                       bias if index == last else None)
            for index, stage in enumerate(chain.stages)
        ))
        self.method, self.rank = chain.method, chain.rank
