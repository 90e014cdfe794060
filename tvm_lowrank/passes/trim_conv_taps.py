"""Drop the kernel rows and columns of a conv that only ever read zero padding.

On the last stage of a CNN run at a small input (ResNet-18 at 32x32: 1x1 maps), a 3x3 conv with
padding 1 reads its outer taps only from the padding: 8 of its 9 multiply-adds per output are by
zero, and a Tai pair's 3x1 and 1x3 stages waste 2 of 3. With static shapes that is known at
compile time, so the constant weight is cropped to the taps that can touch the input and the
padding reduced to match: the same outputs (the dropped products were exact zeros), fewer MACs
and weight bytes. Any target gains; the PyTorch reference is not touched.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ._conv_graph import rewrite_nchw_convs, static_shape


def live_taps(in_size: int, out_size: int, kernel: int, stride: int, dilation: int, pad_before: int) -> range:
    """The taps of one kernel axis that read the input (not the padding) for some output position."""
    live = [tap for tap in range(kernel)
            if any(0 <= out * stride + tap * dilation - pad_before < in_size for out in range(out_size))]
    return range(live[0], live[-1] + 1) if live else range(0)


@relax.transform.function_pass(opt_level=0, name="TrimDeadConvTaps")
class TrimDeadConvTaps:
    """Crop each NCHW/OIHW conv2d's constant weight to the taps that read its (static-shaped) input.

    Convs with no dead tap, symbolic shapes or other layouts are left as they are; a conv whose every
    tap reads padding only (its output is the bias) is left too, as it is not worth a special case.
    """

    def transform_function(self, func: relax.Function, mod, ctx) -> relax.Function:
        return rewrite_nchw_convs(func, self._trim)

    @staticmethod
    def _trim(call, data, weight: np.ndarray):
        attrs = call.attrs
        in_shape, out_shape = static_shape(data.ty.shape), static_shape(call.ty.shape)
        if in_shape is None or out_shape is None:
            return call
        top, left, bottom, right = (int(p) for p in attrs.padding)
        (sy, sx), (dy, dx) = (int(s) for s in attrs.strides), (int(d) for d in attrs.dilation)
        rows = live_taps(in_shape[2], out_shape[2], weight.shape[2], sy, dy, top)
        cols = live_taps(in_shape[3], out_shape[3], weight.shape[3], sx, dx, left)
        if not rows or not cols or (len(rows), len(cols)) == weight.shape[2:]:
            return call
        padding = (top - rows.start * dy, left - cols.start * dx,
                   bottom - (weight.shape[2] - rows.stop) * dy, right - (weight.shape[3] - cols.stop) * dx)
        if min(padding) < 0:  # would crop the input instead: the output size would change
            return call
        cropped = np.ascontiguousarray(weight[:, :, rows.start:rows.stop, cols.start:cols.stop])
        return relax.op.nn.conv2d(data, relax.const(cropped, str(weight.dtype)), strides=attrs.strides,
                                  padding=padding, dilation=attrs.dilation, groups=attrs.groups,
                                  data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW",
                                  out_dtype=attrs.out_dtype or None)
