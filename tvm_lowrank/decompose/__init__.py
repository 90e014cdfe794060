"""Pure decompositions of conv and linear weights (numpy only: no TVM, no PyTorch, no training)."""

from ._chain import ConvChain, ConvGeometry, ConvStage, StageShape, chain_macs, conv_macs
from ._methods import get_method, list_methods, register_method
