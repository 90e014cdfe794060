"""Output-channel-last weights for narrow convs, so the CPU schedule can vectorize across channels.

Our direct-convolution schedule vectorizes along output rows; on maps a few pixels wide (the last
stages of a CNN at 32x32: 4, 2, 1 pixels) most vector lanes then idle, and a 1x1 map runs scalar.
Vectorizing across output channels instead needs each tap's weights for consecutive channels
contiguous: this pass stores such a conv's constant weight as IHWO (weight[i, h, w, o]) at compile
time and says so in the conv's `kernel_layout`, which TOPI's conv honours; the schedule
(`schedule.cpu_conv`) sees the channel-contiguous weight and picks the channel-vector tile.
Numerics are unchanged (the same sums in the same order per output).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ._conv_graph import rewrite_nchw_convs, static_shape

CHANNELS_LAST = "IHWO"


@relax.transform.function_pass(opt_level=0, name="ChannelsLastNarrowConvWeights")
class ChannelsLastNarrowConvWeights:
    """Give every NCHW/OIHW, ungrouped conv2d with a constant weight and an output narrower than
    `lanes` pixels an IHWO weight (the same values, transposed at compile time), and those narrower
    than `max_width` whose output channels fill whole vectors of `lanes`.

    Grouped and depthwise convs keep OIHW: their output channels read different input channels,
    so a channel vector would gather its inputs. `lanes`: the target's vector lanes, the width
    below which row vectors run part-empty; `max_width` (default `lanes`): the target's
    `CPUVectorInfo.channel_vector_width`, wider on AVX2, whose row tiles cost more loads. Between
    the two, a conv with fewer channels than a vector (a 1-channel Tai factor) keeps its row
    vectors: its channel vector would run part-empty instead.
    """

    def __init__(self, lanes: int, max_width: int | None = None):
        self.lanes = lanes
        self.max_width = max(max_width or lanes, lanes)

    def transform_function(self, func: relax.Function, mod, ctx) -> relax.Function:
        return rewrite_nchw_convs(func, self._pack)

    def _pack(self, call, data, weight: np.ndarray):
        attrs = call.attrs
        out_shape = static_shape(call.ty.shape)
        if int(attrs.groups) != 1 or out_shape is None:
            return call
        width, channels = out_shape[3], out_shape[1]
        if width >= self.max_width or (width >= self.lanes and channels % self.lanes):
            return call
        packed = relax.const(np.ascontiguousarray(weight.transpose(1, 2, 3, 0)), str(weight.dtype))
        return relax.op.nn.conv2d(data, packed, strides=attrs.strides, padding=attrs.padding,
                                  dilation=attrs.dilation, groups=1, data_layout="NCHW",
                                  kernel_layout=CHANNELS_LAST, out_layout="NCHW", out_dtype=attrs.out_dtype or None)
