"""Relax passes of tvm-lowrank: one pass per module, each a TVM function pass.

Our error types are registered with TVM's FFI so that a RankError raised inside a pass reaches the
caller as a RankError, not as the RuntimeError the FFI boundary would make of it.
"""

import tvm_ffi

from .. import errors as _errors
from ._records import DECOMPOSED, KEPT, PRE_DECOMPOSED, LayerRecord, weight_fingerprint
from .conv_weight_layout import ChannelsLastNarrowConvWeights
from .fold_weight_layouts import FoldScheduledWeightLayouts
from .pad_at_producer import FuseBorderPadsWithProducers, PadConvInputsAtProducer
from .trim_conv_taps import TrimDeadConvTaps
from .decompose_conv2d import DEFAULT_POLICY, DecomposeConv2D, layer_name

for _name in dir(_errors):
    _cls = getattr(_errors, _name)
    if isinstance(_cls, type) and issubclass(_cls, _errors.LowRankError):
        tvm_ffi.register_error(_name, _cls)

__all__ = ["ChannelsLastNarrowConvWeights", "DECOMPOSED", "DEFAULT_POLICY", "KEPT", "PRE_DECOMPOSED",
           "DecomposeConv2D", "FoldScheduledWeightLayouts", "FuseBorderPadsWithProducers", "LayerRecord",
           "PadConvInputsAtProducer", "TrimDeadConvTaps", "layer_name", "weight_fingerprint"]
