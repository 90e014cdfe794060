"""PyTorch layers for low-rank CNNs, built on the math of `tvm_lowrank.decompose`.

One layer per decomposition, each trainable from scratch (constructor from shapes and rank),
initialisable from a trained dense layer (``from_conv`` / ``from_linear``), convertible back
(``to_dense``) and costed exactly (``flops(in_hw)``, ``num_parameters``); `convert` does it for a
whole model and reports every decision.
"""

from ._chain_conv import (ChainConv2d, CPConv2d, Im2colConv2d, LowRankConv2d, LowRankConvBase, Tucker2Conv2d,
                          conv_geometry, stage_conv)
from ._convert import LAYER_CLASSES, ConversionReport, LayerReport, convert, layer_class
from ._linear import LowRankLinear
from ._rank1 import Rank1Conv2d

__all__ = [
    "ChainConv2d", "CPConv2d", "ConversionReport", "Im2colConv2d", "LAYER_CLASSES", "LayerReport", "LowRankConv2d",
    "LowRankConvBase", "LowRankLinear", "Rank1Conv2d", "Tucker2Conv2d", "conv_geometry", "convert", "layer_class",
    "stage_conv",
]
